"""How fast does `tito grade` grade a class? Prints seconds per submission with the sandbox on
and off, serial and parallel, measured in one run on this machine.

    .venv/bin/python benchmarks/grade_class.py [--students 60] [--serial 10] [--jobs N]

The class is generated from the bundled samples (reference, correct variants, common bugs),
copied to <students> flat-layout notebooks. Parallel runs grade the whole class; serial runs
grade the first --serial students (a serial run of 60 takes many minutes and adds nothing but
time). Each run starts from a fresh course folder with the reference records and the misconception
variants' records already cached (both are computed once per course), so the numbers are the cost
of grading submissions (kernel start, execution, scoring,
gradebook, feedback) and nothing else. Beside the wall time each run prints the CPU seconds per
submission of the kernels and of the grader's own process: those depend much less on how busy the
shared machine is, so they compare runs made at different times.
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
KINDS = ("reference", "correct_", "bug_")


def make_class(folder: Path, students: int) -> Path:
    "`students` flat-layout notebooks cycling over the honest and buggy samples."
    templates = sorted(p for p in SAMPLES.glob("*/09_spatial/09_spatial.ipynb") if p.parts[-3].startswith(KINDS))
    if not templates:
        raise SystemExit(f"no samples in {SAMPLES}: run tests/submissions/make_samples.py")
    folder.mkdir(parents=True)
    for index in range(students):
        shutil.copy(templates[index % len(templates)], folder / f"student_{index:03d}.ipynb")
    return folder


def grade_once(class_dir: Path, count: int, sandbox: bool, jobs: int, scratch: Path, warm: dict):
    from tito.grading.batch import grade_batch
    from tito.grading.course import limits_for
    from tito.grading.model import STATE
    from tito.settings import load_settings
    settings = load_settings(ROOT)
    subset = scratch / f"class-{count}"
    if not subset.exists():
        subset.mkdir()
        for path in sorted(class_dir.glob("*.ipynb"))[:count]:
            shutil.copy(path, subset / path.name)
    out = scratch / f"out-{'on' if sandbox else 'off'}-{jobs}-{count}"
    (out / STATE).mkdir(parents=True)
    for cached in warm.get(sandbox, []):
        shutil.copy(cached, out / STATE / cached.name)
    limits = limits_for(settings, sandbox=sandbox)
    start, cpu_start = time.perf_counter(), time.process_time()
    report = grade_batch(subset, ROOT, out, settings, limits, jobs=jobs, progress=False)
    seconds, grader_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if sandbox not in warm:
        # The course's cached set-up: the reference records (per sandbox mode) and what each known
        # misconception prints (computed in this process, ~6 s): paid once per course, not per run.
        warm[sandbox] = [*(out / STATE).glob("reference-*.json"), *(out / STATE).glob("misconceptions-*.json")]
    bad = [r.student for r in report.results if r.status != "graded"]
    if bad:
        raise SystemExit(f"benchmark submissions did not grade cleanly: {bad}")
    kernel_cpu = sum(r.kernel_cpu for r in report.results)
    return seconds, kernel_cpu / count, grader_cpu / count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--serial", type=int, default=10, help="students graded in the serial runs")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel jobs (default: cores)")
    args = parser.parse_args(argv)
    if args.students < 1 or args.serial < 0 or args.jobs < 1:
        parser.error(f"expected --students >= 1, --serial >= 0 and --jobs >= 1, got "
                     f"{args.students}, {args.serial} and {args.jobs}")
    from tito.grading.sandbox import sandbox_available
    sandbox_ok, why = sandbox_available()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at start")
    if not sandbox_ok:
        print(f"sandbox unavailable ({why}): measuring the unsandboxed runs only")
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as scratch:
        scratch = Path(scratch)
        class_dir = make_class(scratch / "class", args.students)
        warm = {}
        # Warm the reference-record cache (one execution of the source notebook per mode).
        for sandbox in ([True] if sandbox_ok else []) + [False]:
            warm_dir = scratch / f"warm-{'on' if sandbox else 'off'}"
            warm_dir.mkdir()
            grade_once(class_dir, 1, sandbox, 1, warm_dir, warm)
        runs = []
        for sandbox in ([True] if sandbox_ok else []) + [False]:
            serial = min(args.serial, args.students)
            for jobs, count in ((args.jobs, args.students),) + (((1, serial),) if serial else ()):
                seconds, kernel_cpu, grader_cpu = grade_once(class_dir, count, sandbox, jobs, scratch, warm)
                runs.append((sandbox, jobs, count, seconds))
                print(f"  sandbox {'on ' if sandbox else 'off'}  jobs {jobs}  {count:3d} submissions  "
                      f"{seconds:7.1f} s  = {seconds / count:5.2f} s per submission  "
                      f"(CPU per submission: kernel {kernel_cpu:.2f} s, grader {grader_cpu:.2f} s)", flush=True)
    per = {(s, j): sec / n for s, j, n, sec in runs}
    print("summary:")
    for sandbox in ([True] if sandbox_ok else []) + [False]:
        parallel = per[(sandbox, args.jobs)]
        serial = per.get((sandbox, 1))
        against = f"serial {serial:.2f} s/submission, " if serial and args.jobs != 1 else ""
        speedup = f" (x{serial / parallel:.2f})" if serial and args.jobs != 1 else ""
        print(f"  sandbox {'on ' if sandbox else 'off'}: {against}{args.jobs} jobs "
              f"{parallel:.2f} s/submission{speedup}; {args.students} submissions in {parallel * args.students:.0f} s")
    if sandbox_ok and (True, 1) in per and (False, 1) in per:
        print(f"  sandbox overhead: serial x{per[(True, 1)] / per[(False, 1)]:.2f}, "
              f"parallel x{per[(True, args.jobs)] / per[(False, args.jobs)]:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
