"""How long does `tito similarity` take for a class, against the time grading that class takes?
Prints, from one run on this machine: the similarity report of --students generated
submissions (reading, fingerprinting, comparing every pair, the wrong-value and library scans,
writing the pages), and the sandboxed grading of --graded of them, per submission and scaled
to the class, with the ratio.

    .venv/bin/python benchmarks/similarity.py [--students 300] [--graded 8] [--jobs 2]

The class cycles over the reference, the correct variants, the common bugs and the integrity
samples, each disguised by a random mix of the corpus's disguises (tests/integrity/corpus.py)
with a per-student renaming, so that every notebook is different text; being copies of a dozen
originals, the class has far more similar pairs than a real one, which is the slow case.
"""
import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrity"))
KINDS = ("reference", "correct_", "bug_", "integrity_")


def make_class(folder: Path, students: int, seed: int = 0) -> Path:
    import corpus
    rng = random.Random(seed)
    originals = sorted(p.name for p in corpus.SAMPLES.iterdir() if p.name.startswith(KINDS))
    disguises = list(corpus.DISGUISES.values())
    for index in range(students):
        nb = corpus.load(originals[index % len(originals)])
        for disguise in rng.sample(disguises, rng.randint(0, 2)):
            nb = disguise(nb)
        suffix = f"_{index}"
        nb = corpus._each_answer(nb, lambda text: text.replace("out_h", "out_h" + suffix).replace("k_w", "k_w" + suffix))
        corpus._write(folder, f"student_{index:03d}", nb)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--graded", type=int, default=8, help="submissions actually graded to measure grading")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    from tito.grading.batch import grade_batch
    from tito.grading.course import limits_for
    from tito.grading.similarity import compare_class
    from tito.settings import load_settings
    scratch = Path(tempfile.mkdtemp(prefix="tito-bench-similarity-"))
    try:
        class_dir = make_class(scratch / "submitted", args.students)
        start = time.perf_counter()
        report = compare_class(class_dir, ROOT, out=scratch / "pages")
        similarity = time.perf_counter() - start
        subset = scratch / "graded"
        for student in sorted(p.name for p in class_dir.iterdir())[:args.graded]:
            shutil.copytree(class_dir / student, subset / student)
        settings = load_settings(ROOT)
        out = scratch / "course"
        grade_batch(subset, ROOT, out, settings, limits_for(settings, sandbox=True), jobs=args.jobs, progress=False)
        (out / "grades.csv").unlink()   # the reference records stay cached: time only the submissions
        for journal in (out / ".tito-grade" / "results").glob("*.json"):
            journal.unlink()
        start = time.perf_counter()
        grade_batch(subset, ROOT, out, settings, limits_for(settings, sandbox=True), jobs=args.jobs, progress=False)
        per_submission = (time.perf_counter() - start) / args.graded
        start = time.perf_counter()
        with_records = compare_class(subset, ROOT, course=out, out=out)
        small = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    grading = per_submission * args.students
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"similarity  {args.students} submissions  {similarity:6.1f} s  ({len(report.pairs)} pairs listed, "
          f"{report.students} compared)")
    print(f"similarity  {args.graded} graded, with their recorded values  {small:6.2f} s  "
          f"({len(with_records.wrong)} pairs of shared wrong values)")
    print(f"grading     {args.graded} submissions sandboxed, jobs {args.jobs}: {per_submission:.2f} s each, "
          f"so {args.students} take ~{grading:.0f} s")
    print(f"  similarity / grading for {args.students} students: {similarity / grading:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
