"""How the grader's own bookkeeping grows with the class (issue 18, target 3): grade N submissions
that are not even JSON (no kernel starts: only intake, the gradebook, the journal, pages, csv),
then the same N again (all reused), and print milliseconds per submission for each N from one run.

    .venv/bin/python benchmarks/grade_scale.py            # N = 250 1000
    .venv/bin/python benchmarks/grade_scale.py 250 1000 5000
    .venv/bin/python benchmarks/grade_scale.py --dask 250 1000   # the same on a LocalCluster of 2 workers

Each N gets a fresh course folder; the reference run and the misconception variants are computed
once, before the timings, so they do not count against the first N."""
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tito.grading.batch import grade_batch   # noqa: E402
from tito.grading.course import limits_for
from tito.settings import load_settings                   # noqa: E402


def make_class(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"s{i:05d}.ipynb").write_text(f"not a notebook {i}\n", encoding="utf-8")
    return folder


def main(sizes, scheduler=None) -> int:
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True)
    work = Path(tempfile.mkdtemp(prefix="grade-scale-"))
    try:
        warm = work / "warm"
        grade_batch(make_class(work / "warm-class", 1), ROOT, warm, settings, limits, jobs=2, progress=False)
        rows = []
        for n in sizes:
            course = work / f"course-{n}"
            shutil.copytree(warm / ".tito-grade", course / ".tito-grade")   # reference and variants, cached
            (course / ".tito-grade" / "results").exists() and shutil.rmtree(course / ".tito-grade" / "results")
            submitted = make_class(work / f"class-{n}", n)
            started = time.perf_counter()
            grade_batch(submitted, ROOT, course, settings, limits, jobs=2, progress=False, scheduler=scheduler)
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = grade_batch(submitted, ROOT, course, settings, limits, jobs=2, progress=False, scheduler=scheduler)
            rerun = time.perf_counter() - started
            assert again.reused == n and again.graded_now == 0
            rows.append((n, first, rerun))
            print(f"N {n:>6}: first run {first:7.1f} s = {1000 * first / n:6.1f} ms each;   "
                  f"rerun {rerun:6.1f} s = {1000 * rerun / n:5.1f} ms each", flush=True)
        if len(rows) > 1:
            (n0, f0, r0), (n1, f1, r1) = rows[0], rows[-1]
            print(f"largest N against smallest, per submission: first run x{(f1 / n1) / (f0 / n0):.2f}, "
                  f"rerun x{(r1 / n1) / (r0 / n0):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def on_dask(sizes) -> int:
    "main() with every submission graded on a LocalCluster (2 worker processes, one thread each)."
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster:
        print(f"on Dask: {cluster.scheduler_address}, 2 workers", flush=True)
        return main(sizes, scheduler=cluster.scheduler_address)


if __name__ == "__main__":
    args = sys.argv[1:]
    dask = "--dask" in args
    sizes = [int(a) for a in args if a != "--dask"] or [250, 1000]
    sys.exit(on_dask(sizes) if dask else main(sizes))
