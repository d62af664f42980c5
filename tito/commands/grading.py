"""`tito release`, `tito grade`, `tito demo`: the nbgrader side of the course.
(Kept light: nbgrader and nbconvert are imported inside the handlers.)"""
import argparse
import sys
from pathlib import Path

from tito.paths import project_root


def register(subparsers) -> None:
    release = subparsers.add_parser("release", help="source/ -> release/ (nbgrader generate_assignment), then a leak scan")
    release.set_defaults(handler=run_release)

    grade = subparsers.add_parser("grade", help="grade a folder of submissions (nbgrader submitted/ layout or <student>.ipynb files)")
    grade.add_argument("directory", type=Path, help="submitted/ folder, a course folder holding submitted/, a flat folder of <student>.ipynb, "
                            "or a Canvas submissions zip or folder")
    grade.add_argument("--out", type=Path, default=None, help="course folder for gradebook.db, autograded/, feedback/, grades.csv (default: the current directory)")
    grade.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: settings.ini [grading] jobs, 0 = cores)")
    grade.add_argument("--no-sandbox", action="store_true", help="run kernels without bubblewrap (recorded in grades.csv)")
    grade.add_argument("--cell-timeout", type=positive_int, default=None, help="seconds per cell (overrides settings.ini)")
    grade.add_argument("--submission-timeout", type=positive_int, default=None, help="seconds per submission (overrides settings.ini)")
    grade.add_argument("--memory-mb", type=positive_int, default=None, help="address-space cap per kernel (overrides settings.ini)")
    grade.add_argument("--max-notebook-mb", type=positive_int, default=None,
                       help="larger submitted files are not read: status invalid (overrides settings.ini)")
    grade.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    grade.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="grade on a Dask distributed cluster (e.g. tcp://10.0.0.5:8786); each worker "
                            "grades in its own sandbox, grades and feedback are written here")
    grade.add_argument("--histogram", type=Path, default=None, metavar="PNG",
                       help="also write the histogram of scores as a PNG")
    grade.add_argument("--student", action="append", default=None, metavar="ID",
                       help="grade only this student (repeatable); every other row of grades.csv stays as it was")
    grade.add_argument("--force", action="store_true",
                       help="regrade even submissions that have not changed since they were graded")
    grade.add_argument("--submitted-at", type=Path, default=None, metavar="CSV",
                       help="student_id,submitted_at (ISO 8601), as LMS exports give: when each notebook was "
                            "handed in, for settings.ini [deadline] (nbgrader's timestamp.txt wins where it exists)")
    grade.set_defaults(handler=run_grade)

    demo = subparsers.add_parser("demo", help="release the module and grade the bundled sample submissions into demo/")
    demo.add_argument("--out", type=Path, default=None, help="demo course folder (default: demo/ in the project)")
    demo.add_argument("--jobs", type=int, default=None)
    demo.add_argument("--no-sandbox", action="store_true", help="run kernels without bubblewrap")
    demo.set_defaults(handler=run_demo)


def positive_int(text: str) -> int:
    "argparse type: a whole number above zero."
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def run_release(args) -> int:
    from tito.grading.release import LeakError, release
    root = project_root()
    try:
        written = release(root)
    except LeakError as error:
        print(f"tito release: {error}", file=sys.stderr)
        return 1
    print("released (no solution, hidden test or mark scheme text found): "
          + ", ".join(str(p.relative_to(root)) for p in written))
    return 0


def run_grade(args) -> int:
    from tito.grading.batch import grade_batch
    from tito.grading.course import limits_for
    from tito.grading.model import GradingError
    from tito.grading.report import print_table
    from tito.settings import load_settings
    root = project_root()
    settings = load_settings(root)
    out = (args.out or Path.cwd()).resolve()
    jobs = args.jobs if args.jobs else settings.parallel_jobs
    limits = limits_for(settings, sandbox=settings.sandbox and not args.no_sandbox,
                        cell_timeout=args.cell_timeout, submission_timeout=args.submission_timeout,
                        memory_mb=args.memory_mb, max_notebook_mb=args.max_notebook_mb)
    from tito.grading.deadline import DeadlineError, read_submitted_at
    from tito.grading.term import regrade_message
    try:
        submitted_at = read_submitted_at(args.submitted_at) if args.submitted_at else None
        report = grade_batch(args.directory, root, out, settings, limits, jobs=jobs, progress=not args.quiet,
                             scheduler=args.scheduler, students=args.student, force=args.force,
                             submitted_at=submitted_at)
    except (GradingError, DeadlineError, RuntimeError) as error:
        print(f"tito grade: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        from tito.grading.summary import format_summary, summarise
        print_table(report)
        print()
        print(format_summary(summarise(report.csv_path, results=report.results)))
        from tito.commands.integrity import summary_section
        print(summary_section(args.directory, root, out))   # similarity and library use: flags only
    if args.histogram:
        from tito.grading.summary import save_histogram, summarise
        print(f"histogram of scores: {save_histogram(summarise(report.csv_path, results=report.results), args.histogram)}")
    if report.regraded:
        print(regrade_message(report.regrades, report.regraded))
    withheld = [r.student for r in report.results if r.withheld]
    if withheld:
        print(f"WARNING: feedback withheld for review (it would have shown secret text): {', '.join(withheld)}",
              file=sys.stderr)
    print(f"graded {report.graded_now}, reused {report.reused} from an earlier run; "
          f"{report.csv_path}; feedback in {report.feedback_dir}/<student>/"
          + ("" if report.sandbox else "  (SANDBOX OFF)"))
    return 0


def run_demo(args) -> int:
    from tito.commands.demo import run_demo as demo
    return demo(project_root(), out=args.out, jobs=args.jobs, no_sandbox=args.no_sandbox)
