"""`tito serve` as a real process on loopback (uvicorn, sandboxed grading):

- load: 50 uploads at once from 25 students (two each): every one answered 202, kept on disk
  byte for byte, graded exactly once, each student's two in the order received; the service's
  peak memory stays bounded. Most uploads are the untouched release (cheap to grade: every
  check stops at its stub) with the reference and a buggy notebook among them, so the 50
  sandboxed gradings stay within about a minute on 2 cores.
- a SIGKILLed service (kernels and all) restarted on the same course folder finishes its queue;
- `tito submit` from a terminal: received, queued -> grading -> done, the score, the feedback page.
"""
import hashlib
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_helpers import EXPECTED, ROOT, ServeProcess, new_course, sample, wait_finished
from tito.serve.store import Store

STUDENTS = 25
OPEN = ("--attempts-per-hour", "0", "--min-gap-seconds", "0", "--workers", "2")


def tagged(name: str, tag: str) -> bytes:
    "The sample `name` with a tag in its metadata: distinct bytes per upload, graded the same."
    nb = json.loads(sample(name))
    nb["metadata"]["upload"] = tag
    return json.dumps(nb).encode()


@pytest.mark.slow
def test_fifty_uploads_at_once_all_graded_once_none_lost(tmp_path):
    course = new_course(tmp_path / "course")
    store = Store(course)
    tokens = {f"s{i:02d}": store.issue_token(f"s{i:02d}") for i in range(STUDENTS)}
    kinds = {"s00": "reference", "s01": "bug_max_init_zero"}
    uploads = [(student, tagged(kinds.get(student, "untouched_release"), f"{student}-{n}"))
               for n in range(2) for student in tokens]
    server = ServeProcess(course, tmp_path / "serve.log", *OPEN).wait_ready()
    try:
        baseline = server.peak_rss_mb()
        barrier = threading.Barrier(len(uploads))

        def send(upload):
            student, data = upload
            barrier.wait()
            with httpx.Client(base_url=server.url, timeout=120) as client:
                return client.post("/api/submissions", content=data, headers={"Authorization": f"Bearer {tokens[student]}"})
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(send, uploads))
        assert [a.status_code for a in answers] == [202] * len(uploads), [a.text for a in answers if a.status_code != 202]
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == len(uploads)
        attempts = wait_finished(store, ids, seconds=600)
        peak = server.peak_rss_mb()
    finally:
        server.stop()
    for (student, data), attempt in zip(uploads, attempts):
        assert attempt["student"] == student and attempt["status"] == "done", attempt
        assert attempt["grading_runs"] == 1
        assert store.blob_path(attempt["sha256"]).read_bytes() == data
        assert attempt["sha256"] == hashlib.sha256(data).hexdigest()
        expected = EXPECTED[kinds.get(student, "untouched_release")]
        assert (attempt["result"]["score"], attempt["result"]["status"]) == tuple(expected[:2]), (student, attempt)
    for student in tokens:
        first, second = sorted((a for a in attempts if a["student"] == student), key=lambda a: a["number"])
        assert (first["number"], second["number"]) == (1, 2)
        assert first["received_at"] <= second["received_at"] and first["id"] < second["id"]
        assert second["started_at"] >= first["finished_at"], "one student's attempts are graded in order"
    assert len(store.attempts()) == len(uploads)
    # Bounded: the queue is on disk and two threads grade; 50 uploads in flight add little to the
    # process (measured: 96 MiB idle, 132 MiB at the peak of this test).
    assert peak < baseline + 150, f"peak resident memory {peak:.0f} MiB, {baseline:.0f} MiB before the uploads"


@pytest.mark.slow
def test_killed_service_finishes_its_queue_and_tito_submit(tmp_path):
    course = new_course(tmp_path / "course")
    store = Store(course)
    tokens = {name: store.issue_token(name) for name in ("ann", "ben")}
    server = ServeProcess(course, tmp_path / "serve.log", "--attempts-per-hour", "0", "--min-gap-seconds", "0",
                          "--workers", "1").wait_ready()
    ids = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for name, kind in (("ann", "untouched_release"), ("ben", "bug_max_init_zero"), ("ann", "reference")):
                answer = client.post("/api/submissions", content=sample(kind),
                                     headers={"Authorization": f"Bearer {tokens[name]}"})
                assert answer.status_code == 202
                ids.append(answer.json()["id"])
        deadline = time.monotonic() + 120
        while store.attempt(ids[0])["status"] != "grading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.attempt(ids[0])["status"] == "grading"
    finally:
        server.kill()      # mid-grading: the service, its kernels, everything in its process group
    assert [store.attempt(i)["status"] for i in ids] == ["grading", "queued", "queued"]

    server = ServeProcess(course, tmp_path / "serve.log", "--attempts-per-hour", "0", "--min-gap-seconds", "0",
                          "--workers", "1").wait_ready()
    try:
        attempts = wait_finished(store, ids)
        for attempt, kind in zip(attempts, ("untouched_release", "bug_max_init_zero", "reference")):
            assert attempt["status"] == "done" and attempt["result"]["score"] == EXPECTED[kind][0], attempt
        assert [a["grading_runs"] for a in attempts] == [2, 1, 1]
        assert "1 attempt(s) left half-graded by an earlier run are queued again" in server.log_text()
        second = subprocess.run([sys.executable, "-m", "tito.cli", "serve", "--course", str(course), "--port", "1"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"another `tito serve` is running on {course}" in second.stderr

        notebook = tmp_path / "09_spatial.ipynb"
        notebook.write_bytes(sample("bug_max_init_zero"))
        page = tmp_path / "feedback.html"
        run = subprocess.run([sys.executable, "-m", "tito.cli", "submit", str(notebook), "--server", server.url,
                              "--feedback", str(page)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={"TITO_TOKEN": tokens["ben"], "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].startswith("received: attempt 2 at ") and lines[0].endswith("Z (UTC)")
        assert lines[-3:-1] == [f"score: {EXPECTED['bug_max_init_zero'][0]:g} / 66 (graded)",
                                EXPECTED["bug_max_init_zero"][2]]
        assert "done" in lines and lines.index("queued") < lines.index("done")
        assert "Feedback: 09_spatial, ben" in page.read_text()
        wrong = subprocess.run([sys.executable, "-m", "tito.cli", "submit", str(notebook), "--server", server.url,
                                "--token", "tt_000000000000_" + "A" * 43], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
        assert wrong.returncode == 1 and wrong.stderr.startswith("tito submit: 401 no valid token")
    finally:
        server.stop()
    assert server.process.returncode is not None
