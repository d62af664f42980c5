"""Shared by the `tito serve` tests: a service over a fresh course folder (the reference records
computed once per test session and copied), signing in through the pages, the sample notebooks,
and a real `tito serve` process on loopback."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from test_browser import _free_port as free_port
from tito.serve.store import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
EXPECTED = json.loads((ROOT / "tests" / "submissions" / "expected_grades.json").read_text(encoding="utf-8"))
FAST = dict(cell_timeout=10, submission_timeout=90, memory_mb=2048)
OPEN = ServeSettings(attempts_per_hour=0, min_gap_seconds=0, max_upload_mb=16, workers=2)
_reference_cache = []


def sample(student: str) -> bytes:
    return (SAMPLES / student / "09_spatial" / "09_spatial.ipynb").read_bytes()


def new_course(folder: Path) -> Path:
    "A course folder holding the reference records an earlier test computed (or nothing yet)."
    folder.mkdir(parents=True, exist_ok=True)
    if _reference_cache and _reference_cache[0].is_dir():
        shutil.copytree(_reference_cache[0], folder / ".tito-grade", dirs_exist_ok=True)
    return folder


def make_service(folder: Path, serve_settings: ServeSettings = OPEN, **options):
    from tito.serve.app import build_service
    course = new_course(folder)
    options = {**FAST, "autostart": False, **options}
    service = build_service(course, root=ROOT, serve_settings=serve_settings, **options)
    if not _reference_cache:
        _reference_cache.append(course / ".tito-grade")
    return service


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, f"no CSRF field in the page:\n{html[:2000]}"
    return match[1]


def sign_in(client, token: str):
    response = client.post("/signin", data={"csrf": csrf_of(client.get("/").text), "token": token})
    return response


def upload_form(client, data: bytes, name: str = "09_spatial.ipynb", csrf: str | None = None):
    csrf = csrf if csrf is not None else csrf_of(client.get("/student").text)
    return client.post("/student/upload", data={"csrf": csrf},
                       files={"notebook": (name, data, "application/x-ipynb+json")})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def wait_finished(store, ids, seconds: float = 240) -> list:
    "The attempts `ids` once all are done or failed (grading runs in the service's threads)."
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        attempts = [store.attempt(i) for i in ids]
        if all(a["status"] in ("done", "failed") for a in attempts):
            return attempts
        time.sleep(0.2)
    raise AssertionError(f"not graded within {seconds} s: {[(a['id'], a['status']) for a in attempts]}")


class ServeProcess:
    "`tito serve` on 127.0.0.1 in its own process group; stopped by the PID we started."

    def __init__(self, course: Path, log: Path, *extra: str):
        self.course, self.port, self.log_path = course, free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tito.cli", "serve", "--course", str(course), "--port", str(self.port),
                   "--cell-timeout", "10", *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.log = open(log, "a")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, seconds: float = 120) -> "ServeProcess":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tito serve exited with {self.process.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"tito serve did not answer within {seconds} s: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]

    def kill(self) -> None:
        "SIGKILL the whole group: the service and the kernels it was grading with, at once."
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def peak_rss_mb(self) -> float:
        "The service process's peak resident memory (VmHWM), MiB."
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024
