"""How long does a student wait? Upload-to-feedback seconds on an idle `tito serve`, measured in
one run on this machine, with where the time goes.

    .venv/bin/python benchmarks/serve_latency.py [--rounds 5] [--no-sandbox]

Starts `tito serve` on 127.0.0.1 over a fresh course folder, issues a token, grades one warm-up
upload (the reference records and the student runtime are built then, once per course), then
uploads the reference and a buggy notebook --rounds times each, one at a time, through the API
`tito submit` uses, polling every 50 ms. For each upload it prints the time until the service
answered "received" (stored on disk and queued), until grading started, the grading itself
(the sandboxed kernel, scoring, the feedback page: what `tito grade` spends per submission), and
the total until the feedback page could be fetched (each counted from the upload's start); then
the medians and the ratio of the total to the grading alone.
"""
import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
KINDS = ("reference", "bug_max_init_zero")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def upload(client, token: str, data: bytes) -> dict:
    "One upload, waited for until its feedback page is served; the timings in seconds."
    headers = {"Authorization": f"Bearer {token}"}
    start, wall_start = time.perf_counter(), time.time()
    answer = client.post("/api/submissions", content=data, headers=headers)
    received = time.perf_counter() - start
    answer.raise_for_status()
    attempt = answer.json()
    while attempt["status"] not in ("done", "failed"):
        time.sleep(0.05)
        attempt = client.get(attempt["status_url"], headers=headers).json()
    if attempt["status"] != "done":
        raise SystemExit(f"attempt {attempt['id']} failed: {attempt}")
    client.get(attempt["feedback_url"], headers=headers).raise_for_status()
    total = time.perf_counter() - start
    return {"received": received, "total": total, "score": attempt["score"], "id": attempt["id"],
            "wall_start": wall_start, "finished": _epoch(attempt["finished_at"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args()
    import httpx
    from tito.serve.store import Store

    course = Path(tempfile.mkdtemp(prefix="tito-serve-bench-"))
    store = Store(course)
    token = store.issue_token("bench")
    port = _free_port()
    command = [sys.executable, "-m", "tito.cli", "serve", "--course", str(course), "--port", str(port),
               "--attempts-per-hour", "0", "--min-gap-seconds", "0", "--workers", "1"]
    if args.no_sandbox:
        command.append("--no-sandbox")
    log = open(course / "serve.log", "w")
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            deadline = time.monotonic() + 180
            while True:
                try:
                    client.get("/healthz").raise_for_status()
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"tito serve did not start: {(course / 'serve.log').read_text()[-2000:]}")
                    time.sleep(0.2)
            data = {kind: (SAMPLES / kind / "09_spatial" / "09_spatial.ipynb").read_bytes() for kind in KINDS}
            upload(client, token, data["reference"])   # warm-up
            print(f"tito serve, idle, 1 grading worker, sandbox {'off' if args.no_sandbox else 'on'}; "
                  f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"load average {os.getloadavg()[0]:.1f} at the start")
            print(f"{'notebook':<20} {'score':>6} {'received':>9} {'started':>9} {'grading':>8} {'total':>7}")
            rows = []
            for _ in range(args.rounds):
                for kind in KINDS:
                    timing = upload(client, token, data[kind])
                    attempt = store.attempt(timing["id"])
                    timing["to_start"] = _epoch(attempt["started_at"]) - timing["wall_start"]
                    timing["grading"] = timing["finished"] - _epoch(attempt["started_at"])
                    timing["kernel_cpu"] = attempt["result"]["kernel_cpu"]
                    rows.append(timing)
                    print(f"{kind:<20} {timing['score']:>6g} {timing['received'] * 1000:>7.0f} ms "
                          f"{timing['to_start'] * 1000:>6.0f} ms {timing['grading']:>6.2f} s {timing['total']:>5.2f} s")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()
    median = {key: statistics.median(r[key] for r in rows)
              for key in ("received", "to_start", "grading", "total", "kernel_cpu")}
    rest = median["total"] - max(median["to_start"], median["received"]) - median["grading"]
    print(f"median of {len(rows)}: upload-to-feedback {median['total']:.2f} s: \"received\" after "
          f"{median['received'] * 1000:.0f} ms, grading started after {median['to_start'] * 1000:.0f} ms, grading "
          f"{median['grading']:.2f} s (kernel CPU {median['kernel_cpu']:.2f} s), polling and fetching the page "
          f"{rest * 1000:.0f} ms; total/grading x{median['total'] / median['grading']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
