"""`tito grade --scheduler`: the same submissions graded on a Dask LocalCluster of two worker
processes give the same grades.csv rows as local grading (tests/submissions/expected_grades.json,
which tests/test_grading.py checks for local grading), even when a worker is killed mid-batch;
feedback and autograded notebooks arrive in the instructor's course folder."""
import csv
import json
import os
import shutil
import signal
import threading
from pathlib import Path

from distributed import Client, LocalCluster

from tito.grading.batch import grade_batch
from tito.grading.course import limits_for
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
EXPECTED = json.loads((ROOT / "tests" / "submissions" / "expected_grades.json").read_text())
STUDENTS = ("reference", "bug_max_init_zero", "correct_vectorised", "bug_stride_ignored", "invalid_json")


def test_cluster_grades_equal_local_grades_with_a_worker_killed(tmp_path):
    submitted = tmp_path / "submitted"
    for student in STUDENTS:
        shutil.copytree(SAMPLES / student, submitted / student)
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True, cell_timeout=10, submission_timeout=90, memory_mb=2048)
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one_worker_once_busy():
            # Wait until a grading task runs on the first worker, then kill that worker's process.
            for _ in range(600):
                if any(client.processing().values()):
                    threading.Event().wait(2.0)
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
                threading.Event().wait(0.1)

        killer = threading.Thread(target=kill_one_worker_once_busy, daemon=True)
        killer.start()
        report = grade_batch(submitted, ROOT, tmp_path / "course", settings, limits, progress=False,
                             scheduler=cluster.scheduler_address)
        killer.join(timeout=5)
    assert killed, "no worker was killed: the test would prove nothing about failures"
    with open(report.csv_path, newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(STUDENTS), "every student graded exactly once"
    for student in STUDENTS:
        score, status, detail = EXPECTED[student]
        assert (float(rows[student]["score"]), rows[student]["status"], rows[student]["detail"]) == \
            (score, status, detail), student
        assert (tmp_path / "course" / "feedback" / student / "09_spatial.html").exists()
    assert (tmp_path / "course" / "autograded" / "reference" / "09_spatial" / "09_spatial.ipynb").exists()
