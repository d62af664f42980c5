"""`tito similarity DIR`: which submissions share code (after renaming, comments and layout are
set aside), which share the same wrong recorded values, and which call a library the policy
forbids. Flags for a person to look at; nothing here changes a score."""
import sys
from pathlib import Path

from tito.paths import project_root


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "similarity", help="flag similar submissions, shared wrong values and forbidden library use (changes no score)")
    parser.add_argument("directory", type=Path,
                        help="submitted/ folder, a course folder holding submitted/, or a flat folder of <student>.ipynb")
    parser.add_argument("--course", type=Path, default=None,
                        help="a course folder graded by `tito grade` (its autograded notebooks give the recorded "
                             "values; default: the current directory when it holds autograded/)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where similarity/ (index.html, pair pages, report.json) is written (default: the course "
                             "folder, else the current directory)")
    parser.add_argument("--threshold", type=float, default=None, help="list pairs at least this similar, 0..1 "
                        "(overrides settings.ini [similarity] threshold)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from dataclasses import replace

    from tito.grading.model import GradingError
    from tito.grading.similarity import compare_class, format_report, load_similarity_settings
    root = project_root()
    course = args.course
    if course is None and (Path.cwd() / "autograded").is_dir():
        course = Path.cwd()
    if course is not None and not (Path(course) / "autograded").is_dir():
        print(f"tito similarity: {course} is not a graded course folder (expected autograded/ in it; "
              f"run `tito grade` first, or leave out --course)", file=sys.stderr)
        return 1
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"tito similarity: --threshold must be from 0 to 1, got {args.threshold:g}", file=sys.stderr)
        return 2
    try:
        settings = load_similarity_settings(root)
        if args.threshold is not None:
            settings = replace(settings, threshold=args.threshold)
        report = compare_class(args.directory, root, course=course, out=args.out or course or Path.cwd(),
                               settings=settings)
    except (GradingError, ValueError, FileNotFoundError) as error:
        print(f"tito similarity: {error}", file=sys.stderr)
        return 1
    print(format_report(report, top=20))
    return 0


def summary_section(directory: Path, root: Path, out: Path) -> str:
    "The integrity section of the class summary after `tito grade` (never fails the grading)."
    from tito.grading.similarity import compare_class, format_report
    try:
        return format_report(compare_class(directory, root, course=out, out=out))
    except Exception as error:  # noqa: BLE001 - the grades are written; a flag report must not undo that
        return f"academic integrity: not computed ({type(error).__name__}: {error})"
