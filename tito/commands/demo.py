"""`tito demo` (what `make demo` runs): the instructor's whole loop on the bundled samples.

Export and release the module if they are missing, copy a representative set of the sample
submissions of tests/submissions/ into a demo course folder (demo/, gitignored) in nbgrader's
layout, grade them there, print the grade table and say where the feedback pages are."""
import shutil
import sys
from pathlib import Path

from tito.settings import load_settings

# reference, differently written correct answers, each common bug, the untouched release, bad JSON,
# and the integrity samples (a copied pair, library users)
DEMO_PREFIXES = ("reference", "correct_", "bug_", "untouched_release", "invalid_json", "integrity_")


# When demo students handed in, in hours after the demo's due date (nbgrader's timestamp.txt): these
# three late (one past the 3 days allowed), the others 3 h early.
DEMO_HANDED_IN = {"bug_stride_ignored": 26.5, "correct_other_loop_order": 0.1, "bug_avg_divisor": 100.0}
DEMO_DUE = "2026-12-10T23:59:00+00:00"


def demo_deadline(submitted: Path):
    "The demo's late policy, and timestamp.txt files as nbgrader's exchange writes them for a few students."
    from datetime import timedelta
    from tito.grading.deadline import DeadlinePolicy, parse_time
    due = parse_time(DEMO_DUE)
    for folder in sorted(p for p in submitted.glob("*/09_spatial") if p.is_dir()):
        hours = DEMO_HANDED_IN.get(folder.parent.name, -3.0)   # the others: on time
        if hours is not None:
            stamp = due + timedelta(hours=hours)
            (folder / "timestamp.txt").write_text(stamp.strftime("%Y-%m-%d %H:%M:%S.%f UTC\n"), encoding="utf-8")
    return DeadlinePolicy(due=due, grace_minutes=15, late_penalty_per_day=10, max_late_days=3)


def demo_students(samples: Path) -> list:
    return sorted(p.name for p in samples.iterdir() if p.is_dir() and p.name.startswith(DEMO_PREFIXES))


def ensure_released(root: Path, settings) -> None:
    from tito.commands.course import export_sources, nbdev_export
    from tito.grading.release import release
    module = settings.modules[0]
    notebook = settings.notebook(module)
    if not (root / "source" / module / notebook).exists():
        print("demo: exporting nbs/ -> tinytorch/, source/")
        nbdev_export(root)
        export_sources(root)
    if not (root / "release" / module / notebook).exists():
        print("demo: releasing the student version -> release/")
        release(root)


def run_demo(root: Path, out: Path | None = None, jobs: int | None = None, no_sandbox: bool = False) -> int:
    from tito.grading.batch import grade_batch
    from tito.grading.course import limits_for
    from tito.grading.model import GradingError
    from tito.grading.report import print_table
    from tito.grading.sandbox import sandbox_available
    root = Path(root).resolve()
    settings = load_settings(root)
    module = settings.modules[0]
    samples = root / "tests" / "submissions" / "submitted"
    if not samples.is_dir():
        print(f"demo: {samples} not found (regenerate with tests/submissions/make_samples.py)", file=sys.stderr)
        return 1
    sandbox = settings.sandbox and not no_sandbox
    if sandbox:
        available, why = sandbox_available()
        if not available:
            print(f"demo: the grading sandbox cannot run here ({why}).\n"
                  f"      Run scripts/setup.sh, or `tito demo --no-sandbox` to grade without it.", file=sys.stderr)
            return 1
    ensure_released(root, settings)
    out = Path(out or root / "demo").resolve()
    submitted = out / "submitted"
    if submitted.exists():
        shutil.rmtree(submitted)
    for student in demo_students(samples):
        shutil.copytree(samples / student, submitted / student)
    print(f"demo: grading {len(demo_students(samples))} sample submissions in {out} "
          f"({'sandboxed' if sandbox else 'SANDBOX OFF'})")
    policy = demo_deadline(submitted)
    print(f"demo: due {policy.due:%Y-%m-%d %H:%M} UTC, {policy.grace_minutes:g} min grace, "
          f"{policy.late_penalty_per_day:g} % a started day, at most {policy.max_late_days} days late; "
          f"{', '.join(f'{s} handed in {h:+g} h' for s, h in DEMO_HANDED_IN.items())} "
          f"(a real course puts this in settings.ini [deadline]; nbgrader writes timestamp.txt)")
    limits = limits_for(settings, sandbox=sandbox)
    try:
        report = grade_batch(submitted, root, out, settings, limits, jobs=jobs or settings.parallel_jobs,
                             progress=True, module=module, deadline=policy)
    except GradingError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print()
    print_table(report)
    print()
    from tito.grading.summary import format_summary, save_histogram, summarise
    summary = summarise(report.csv_path, results=report.results)
    print(format_summary(summary))
    print(f"histogram: {save_histogram(summary, out / 'scores.png')}")
    from tito.commands.integrity import summary_section
    print(summary_section(submitted, root, out))
    print()
    print(f"grades:    {report.csv_path}")
    print(f"feedback:  {report.feedback_dir}/<student>/{module}.html  "
          f"(e.g. {report.feedback_dir / 'bug_max_init_zero' / (module + '.html')})")
    print(f"gradebook: {out / 'gradebook.db'} (plain nbgrader works there: cd {out} && nbgrader db assignment list)")
    return 0
