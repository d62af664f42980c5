"""`tito test` and `tito validate`: what a student runs on their notebook before submitting.
(`tito export` in a student folder lives in `course.py`, which hands over to `tito.student`.)"""
import sys
from pathlib import Path


def register(subparsers) -> None:
    test = subparsers.add_parser(
        "test", help="run the visible checks of a notebook and report each graded cell (exit 0 when all pass)")
    test.add_argument("notebook", nargs="?", help="the notebook (default: the module notebook of this student "
                      "folder, or nbs/<module>.ipynb in the course folder)")
    test.add_argument("--timeout", type=int, default=None, help="seconds one cell may run")
    test.set_defaults(handler=run_test)
    validate = subparsers.add_parser(
        "validate", help="before submitting: is the notebook well formed, unchanged where locked, passing its visible checks?")
    validate.add_argument("notebook")
    validate.add_argument("--release", default=None,
                          help="the released notebook it came from (to find deleted cells; found automatically in the course folder)")
    validate.add_argument("--timeout", type=int, default=None, help="seconds one cell may run")
    validate.set_defaults(handler=run_validate)


def _cell_timeout(requested):
    from tito.student import DEFAULT_CELL_TIMEOUT
    if requested:
        return requested
    try:
        from tito.paths import project_root
        from tito.settings import load_settings
        return load_settings(project_root()).cell_timeout
    except (FileNotFoundError, ValueError):
        return DEFAULT_CELL_TIMEOUT


def _default_notebooks() -> list:
    from tito.student import StudentError, find_student_folder, module_notebooks
    folder = find_student_folder()
    if folder is not None:
        notebooks = module_notebooks(folder)
        if notebooks:
            return notebooks
    try:
        from tito.paths import project_root
        from tito.settings import load_settings
        root = project_root()
        settings = load_settings(root)
        return [root / "nbs" / settings.notebook(m) for m in settings.modules]
    except (FileNotFoundError, ValueError):
        raise StudentError("no notebook given and none found here: run `tito test NOTEBOOK`, "
                           "or run it in the folder holding your notebook") from None


def run_test(args) -> int:
    from tito.student import (StudentError, find_student_folder, format_test_report, package_status,
                                   run_visible_checks)
    try:
        notebooks = [Path(args.notebook)] if args.notebook else _default_notebooks()
        reports = [run_visible_checks(nb, _cell_timeout(args.timeout)) for nb in notebooks]
    except StudentError as error:
        print(f"tito test: {error}", file=sys.stderr)
        return 2
    for report in reports:
        print(format_test_report(report))
    folder = find_student_folder()
    if folder is not None:
        for sentence in package_status(folder):
            print(f"your package: {sentence}")
    return 0 if all(r.ok for r in reports) else 1


def run_validate(args) -> int:
    from tito.student import StudentError, format_validation, validate_notebook
    try:
        report = validate_notebook(Path(args.notebook), _cell_timeout(args.timeout),
                                   Path(args.release) if args.release else None)
    except StudentError as error:
        print(f"tito validate: {error}", file=sys.stderr)
        return 1
    print(format_validation(report), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
