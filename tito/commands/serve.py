"""`tito serve`, `tito tokens`, `tito submit`: the submission service, its tokens, and handing in
from a terminal. (Kept light: Starlette, uvicorn and the grader are imported inside the handlers.)"""
import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tito.commands.grading import positive_int

TOKEN_ENV = "TITO_TOKEN"


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="the submission service: students upload, see graded feedback in seconds "
                                  "(course folder = the current directory)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; put a TLS proxy "
                       "in front before listening beyond this machine)")
    serve.add_argument("--port", type=positive_int, default=8000)
    serve.add_argument("--workers", type=positive_int, default=None,
                       help="submissions graded at once (default: settings.ini [serve] workers)")
    serve.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="grade on a Dask distributed cluster (e.g. tcp://10.0.0.5:8786) instead of this machine")
    serve.add_argument("--no-sandbox", action="store_true", help="run kernels without bubblewrap (recorded in each grade)")
    serve.add_argument("--cell-timeout", type=positive_int, default=None, help="seconds per cell (overrides settings.ini)")
    serve.add_argument("--submission-timeout", type=positive_int, default=None,
                       help="seconds per submission (overrides settings.ini)")
    serve.add_argument("--memory-mb", type=positive_int, default=None, help="address-space cap per kernel (overrides settings.ini)")
    serve.add_argument("--course", type=Path, default=None,
                       help="course folder for .tito-serve/ (default: the current directory)")
    serve.add_argument("--attempts-per-hour", type=non_negative_int, default=None,
                       help="per student, 0 = no limit (overrides settings.ini [serve])")
    serve.add_argument("--min-gap-seconds", type=non_negative_int, default=None,
                       help="between two attempts of a student, 0 = none (overrides settings.ini [serve])")
    serve.add_argument("--max-upload-mb", type=positive_int, default=None,
                       help="larger uploads are refused with 413 (overrides settings.ini [serve])")
    serve.add_argument("--secure-cookies", action="store_true",
                       help="send the session cookie over HTTPS only (behind a TLS proxy)")
    serve.set_defaults(handler=run_serve)

    tokens = subparsers.add_parser("tokens", help="issue one sign-in token per student of a roster CSV (printed once, "
                                   "stored only as a hash)")
    tokens.add_argument("roster", type=Path, nargs="?", help="CSV with a student_id column")
    tokens.add_argument("--instructor", metavar="NAME", default=None, help="also issue an instructor token for NAME")
    tokens.add_argument("--course", type=Path, default=None,
                        help="course folder of the service (default: the current directory)")
    tokens.add_argument("--reissue", action="store_true",
                        help="give students who already hold a token a new one (the old one stops working)")
    tokens.add_argument("--out", type=Path, default=None,
                        help="write student_id,token to this file (mode 600) instead of the terminal")
    tokens.set_defaults(handler=run_tokens)

    submit = subparsers.add_parser("submit", help="hand a notebook in to a `tito serve` service and wait for its grade")
    submit.add_argument("notebook", type=Path)
    submit.add_argument("--server", required=True, help="the service's address, e.g. http://127.0.0.1:8000")
    submit.add_argument("--token", default=None, help=f"your personal token (default: ${TOKEN_ENV})")
    submit.add_argument("--no-wait", action="store_true", help="return once the service has received it")
    submit.add_argument("--timeout", type=positive_int, default=900, help="seconds to wait for the grade")
    submit.add_argument("--feedback", type=Path, default=None, metavar="HTML", help="save the feedback page here")
    submit.set_defaults(handler=run_submit)


def non_negative_int(text: str) -> int:
    "argparse type: a whole number, zero or more."
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), got {text!r}")
    return int(text)


# ---------------------------------------------------------------- tito serve

def run_serve(args) -> int:
    from tito.grading.model import GradingError
    from tito.serve.app import build_service
    try:
        import uvicorn
    except ImportError:
        print("tito serve: needs the serve extra: pip install -e '.[serve]'", file=sys.stderr)
        return 1
    try:
        from dataclasses import replace
        from tito.paths import project_root
        from tito.serve.store import ServeSettings
        root = project_root()
        overrides = {key: getattr(args, key) for key in ("attempts_per_hour", "min_gap_seconds", "max_upload_mb")
                     if getattr(args, key) is not None}
        service = build_service(args.course or Path.cwd(), root=root, workers=args.workers, scheduler=args.scheduler,
                                sandbox=not args.no_sandbox, https_only=args.secure_cookies,
                                serve_settings=replace(ServeSettings.from_ini(root), **overrides),
                                cell_timeout=args.cell_timeout, submission_timeout=args.submission_timeout,
                                memory_mb=args.memory_mb)
        service.store.hold_lock()
    except (GradingError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"tito serve: {error}", file=sys.stderr)
        return 1
    print(f"tito serve: {service.course} on http://{args.host}:{args.port}/  "
          f"({service.pool.workers} grading worker(s){', Dask ' + args.scheduler if args.scheduler else ''}"
          f"{', SANDBOX OFF' if not service.pool.course.limits.sandbox else ''})", file=sys.stderr)
    uvicorn.run(service.app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


# ---------------------------------------------------------------- tito tokens

def read_roster(path: Path) -> list:
    "Student ids of a roster CSV (its student_id column), in order, once each; errors name the problem."
    from tito.serve.store import valid_student_id
    if not path.is_file():
        raise ValueError(f"{path} not found: expected a CSV file with a student_id column")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "student_id" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: expected a student_id column, got columns {reader.fieldnames or []}")
        students = [(row.get("student_id") or "").strip() for row in reader]
    bad = [s for s in students if not valid_student_id(s)]
    if bad:
        raise ValueError(f"{path}: {len(bad)} student id(s) are not letters, digits, '.', '_' or '-' "
                         f"(at most 64): {', '.join(repr(s) for s in bad[:5])}")
    return list(dict.fromkeys(students))


def run_tokens(args) -> int:
    from tito.paths import project_root
    from tito.serve.store import Store
    if args.roster is None and not args.instructor:
        print("tito tokens: give a roster CSV, --instructor NAME, or both", file=sys.stderr)
        return 2
    try:
        if args.course is None:
            project_root()   # tokens belong in a course folder, not wherever the shell happens to be
        students = read_roster(args.roster) if args.roster else []
        store = Store(args.course or Path.cwd())
        holders = store.holders("student")
        issued = [(s, store.issue_token(s)) for s in students if args.reissue or s not in holders]
        if args.instructor:
            issued.append((args.instructor, store.issue_token(args.instructor, role="instructor")))
    except (ValueError, FileNotFoundError) as error:
        print(f"tito tokens: {error}", file=sys.stderr)
        return 1
    kept = [s for s in students if s in holders and not args.reissue]
    lines = "student_id,token\n" + "".join(f"{who},{token}\n" for who, token in issued)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(lines)
        print(f"tito tokens: {len(issued)} token(s) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    if kept:
        print(f"tito tokens: {len(kept)} student(s) already hold a token and kept it (--reissue replaces them)",
              file=sys.stderr)
    print("tito tokens: these tokens are shown only now; the service keeps only their SHA-256", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- tito submit

def printable(text) -> str:
    "Text from the service (a student's own words may be in it) without terminal control characters."
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in str(text))


def _request(url: str, token: str, data: bytes | None = None, accept: str = "application/json"):
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Authorization": f"Bearer {token}", "Accept": accept,
                                              "Content-Type": "application/x-ipynb+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def run_submit(args) -> int:
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"tito submit: no token: pass --token or set ${TOKEN_ENV}", file=sys.stderr)
        return 2
    if not args.notebook.is_file():
        print(f"tito submit: {args.notebook} not found: expected your .ipynb file", file=sys.stderr)
        return 2
    server = args.server.rstrip("/")
    try:
        attempt = json.loads(_request(f"{server}/api/submissions", token, args.notebook.read_bytes()))
        print(f"received: attempt {attempt['number']} at {attempt['received_at']} (UTC)")
        if args.no_wait:
            return 0
        shown, deadline = attempt["status"], time.monotonic() + args.timeout
        print(shown)
        while attempt["status"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                print(f"tito submit: still {attempt['status']} after {args.timeout} s; it stays queued: "
                      f"run again later with --no-wait, or look on the service's page", file=sys.stderr)
                return 1
            time.sleep(0.5)
            attempt = json.loads(_request(server + attempt["status_url"], token))
            if attempt["status"] != shown:
                shown = attempt["status"]
                print(shown)
        if attempt["status"] == "failed":
            print("tito submit: this attempt could not be graded; tell your instructor", file=sys.stderr)
            return 1
        print(f"score: {attempt['score']:g} / {attempt['max_score']:g} ({printable(attempt['grade_status'])})")
        if attempt["detail"]:
            print(printable(attempt["detail"]))
        if args.feedback:
            args.feedback.write_bytes(_request(server + attempt["feedback_url"], token, accept="text/html"))
            print(f"feedback page: {args.feedback}")
        else:
            print(f"feedback page: {server}/attempts/{attempt['id']}/feedback (signed in) or --feedback FILE.html")
        return 0
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error", "")
        except ValueError:
            reason = ""
        retry = error.headers.get("Retry-After")
        print(f"tito submit: {error.code} {printable(reason or error.reason)}"
              + (f" (retry after {retry} s)" if retry else ""), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"tito submit: cannot reach {server}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return 1
