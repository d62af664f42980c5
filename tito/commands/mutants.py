"""`tito mutants`: how strong are the hidden tests? Generates single-point mutants of the
solution regions, judges each with the grader's verdict (killed: it loses points), lists the survivors and the
mean share of points a killed mutant loses."""
import sys
from pathlib import Path

from tito.paths import project_root

EQUIVALENT_FILE = "tests/equivalent_mutants.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser("mutants", help="mutation-test the hidden tests of a module notebook")
    parser.add_argument("notebook", nargs="?", default="nbs/09_spatial.ipynb")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.95, help="fail below this share of killed mutants")
    parser.add_argument("--verdict", choices=("grader", "records"), default="grader",
                        help="grader: a cell fails by an error or a wrong record (as tito grade); "
                             "records: asserts stripped, only the records count (a student who disabled asserts)")
    parser.add_argument("--first-kill", action="store_true",
                        help="stop judging a mutant at its first failing cell (faster; no share of points lost)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tito.grading.mutation import load_equivalent, run_mutants
    root = project_root()
    from tito.grading.misconceptions import load as load_misconceptions
    library = load_misconceptions(root, Path(args.notebook).stem)
    report = run_mutants(root / args.notebook, jobs=args.jobs, verdict=args.verdict, points=not args.first_kill,
                         misconceptions=library)
    equivalent = load_equivalent(root / EQUIVALENT_FILE)
    survivors = [m for m in report.survivors() if m.key not in equivalent]
    judged = len(report.outcomes) - (len(report.survivors()) - len(survivors))
    score = (judged - len(survivors)) / max(1, judged)
    print(f"{len(report.outcomes)} mutants, {report.killed} killed, "
          f"{len(report.survivors()) - len(survivors)} shown equivalent ({EQUIVALENT_FILE}), "
          f"{len(survivors)} survived: {score:.1%} of non-equivalent mutants killed")
    if report.mean_lost is not None:
        print(f"a killed mutant loses {report.mean_lost:.0%} of the module's points on average "
              f"(partial credit: each check of a cell scores on its own)")
    if report.named_share is not None:
        print(f"{report.named_share:.0%} of the killed mutants get feedback naming a misconception of "
              f"misconceptions/{Path(args.notebook).stem}.json ({len(library)} known misconceptions); "
              f"the others are told which check differs")
    for mutant in survivors:
        print(f"  survived  {mutant.key}   (cell {mutant.cell}, line {mutant.line})")
    if score < args.threshold:
        print(f"below the {args.threshold:.0%} threshold: kill each survivor with a new check, "
              f"or record why it is equivalent in {EQUIVALENT_FILE}", file=sys.stderr)
        return 1
    return 0
