"""`tito export-grades` (grades.csv -> Canvas, Gradescope, Moodle, JSON) and `tito gradescope`
(Gradescope's autograder zip). Kept light: the grading modules are imported inside the handlers."""
import sys
from pathlib import Path

from tito.paths import project_root


def register(subparsers) -> None:
    export = subparsers.add_parser("export-grades", help="write grades.csv in the forms Canvas, Gradescope, Moodle "
                                                         "and other tools import")
    export.add_argument("--grades", type=Path, default=Path("grades.csv"), help="grades.csv of `tito grade` "
                                                                                 "(default: ./grades.csv)")
    export.add_argument("--canvas", type=Path, default=None, metavar="GRADEBOOK.csv",
                        help="the gradebook exported from Canvas (Grades > Export); needs --assignment")
    export.add_argument("--assignment", default=None, metavar="NAME",
                        help="the Canvas gradebook column (its title, or the whole header 'Title (id)'), "
                             "or the grade item name in the Moodle file (default: the module)")
    export.add_argument("--canvas-key", default="ID", choices=("ID", "SIS User ID", "SIS Login ID"),
                        help="gradebook column holding grades.csv's student_id (default: ID, Canvas's user id)")
    export.add_argument("--scale", action="store_true",
                        help="rescale scores to the Canvas assignment's Points Possible when they differ")
    export.add_argument("--gradescope", action="store_true", help="also write gradescope.csv")
    export.add_argument("--moodle", action="store_true", help="also write moodle.csv")
    export.add_argument("--moodle-key", default="idnumber", choices=("idnumber", "username", "email"),
                        help="the Moodle user field grades.csv's student_id is (default: idnumber)")
    export.add_argument("--json", action="store_true", help="also write grades.json (every row, per-check results, "
                                                            "provenance)")
    export.add_argument("--out", type=Path, default=None, help="folder to write into (default: beside grades.csv)")
    export.set_defaults(handler=run_export)

    gradescope = subparsers.add_parser("gradescope", help="build Gradescope's autograder zip (setup.sh, run_autograder, "
                                                          "the course's hidden checks)")
    gradescope.add_argument("--out", type=Path, default=Path("autograder.zip"), help="zip to write (default: "
                                                                                       "./autograder.zip)")
    gradescope.set_defaults(handler=run_gradescope)


def run_export(args) -> int:
    from tito.grading import lms
    if not (args.canvas or args.gradescope or args.moodle or args.json):
        print("tito export-grades: say what to write: --canvas GRADEBOOK.csv --assignment NAME, --gradescope, "
              "--moodle and/or --json", file=sys.stderr)
        return 2
    if args.canvas and not args.assignment:
        print("tito export-grades: --canvas needs --assignment NAME (the gradebook column to fill)", file=sys.stderr)
        return 2
    out = args.out or args.grades.parent
    try:
        grades = lms.read_grades(args.grades)
        module = _module()
        written = []
        if args.canvas:
            target = out / "canvas-import.csv"
            report = lms.canvas_import(grades, args.canvas, args.assignment, target, key=args.canvas_key,
                                       scale=args.scale)
            written.append((target, report))
        if args.gradescope:
            target = out / "gradescope.csv"
            written.append((target, lms.gradescope_csv(grades, target)))
        if args.moodle:
            target = out / "moodle.csv"
            written.append((target, lms.moodle_csv(grades, target, args.assignment or module, key=args.moodle_key)))
        if args.json:
            target = out / "grades.json"
            lms.json_export(grades, target, module)
            written.append((target, None))
    except (lms.LmsError, OSError) as error:
        print(f"tito export-grades: {error}", file=sys.stderr)
        return 1
    for target, report in written:
        print(f"{target}" + (": " + "; ".join(report.lines()) if report else f": {len(grades.rows)} students"))
    return 0


def _module() -> str:
    from tito.settings import load_settings
    try:
        return load_settings(project_root()).modules[0]
    except (FileNotFoundError, ValueError):
        return ""


def run_gradescope(args) -> int:
    from tito.grading.gradescope import build_autograder
    from tito.grading.model import GradingError
    from tito.settings import load_settings
    root = project_root()
    try:
        path = build_autograder(root, args.out, load_settings(root))
    except (GradingError, ValueError, OSError) as error:
        print(f"tito gradescope: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: upload it as the assignment's autograder (Configure Autograder > Zip file upload)")
    return 0
