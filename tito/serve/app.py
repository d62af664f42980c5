"""The web app of `tito serve` (Starlette; Jinja2 pages with autoescape; signed session cookies).

Rules every route keeps:
- who: a page needs a signed-in session, the API a `Authorization: Bearer` token; none or a wrong
  one is 401. Tokens are checked in constant time against their stored hash (store.authenticate).
  A student reaches only their own attempts: another's is 404, exactly as one that does not exist.
- forms: every POST carries the session's CSRF token (compared in constant time), the cookie is
  SameSite=Strict and HttpOnly, and a cross-origin Origin header is refused (403).
- uploads: at most [serve] max_upload_mb (413, counted while reading, whatever Content-Length
  says); not a notebook is 400 with the reason; over the rate limit is 429 with Retry-After and
  the time to come back. An accepted upload is on disk and queued before the answer.
- files: nothing in a request names a file. Attempts are integers the service generated, looked
  up in the database; the pages served are built from those rows. `source/` and the rest of the
  course folder are never served; static files come from the package's own static/ folder.
"""
import asyncio
import csv
import hmac
import io
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tito.grading.notebooks import InvalidNotebook, read_submission
from tito.serve.store import Refusal, utc_iso

HERE = Path(__file__).parent
# Upload bodies read at once: with [serve] max_upload_mb, what uploads may hold in memory.
UPLOADS_AT_ONCE = 8
FINISHED = ("done", "failed")
# The feedback page is the grader's static HTML (sanitised by bleach): no script may run in it.
FEEDBACK_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'")


class TooLarge(Exception):
    pass


class Refused(Exception):
    "An upload refused with a status code and a reason (400, 413, 429), for the page or the API."

    def __init__(self, status: int, reason: str, retry_after: int | None = None):
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after

    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class SecurityHeaders:
    """ASGI middleware: every response says nosniff, not cacheable, its CSP, and no referrer to other sites
    (same-origin: with no-referrer at all, browsers send our own forms `Origin: null`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                                    (b"cache-control", b"no-store"), (b"x-frame-options", b"SAMEORIGIN"),
                                    (b"content-security-policy", PAGE_CSP.encode())):
                    if name not in names:
                        headers.append((name, value))
                message = dict(message, headers=headers)
            await send(message)
        await self.app(scope, receive, with_headers)


def create_app(store, pool, *, secret_key: str | None = None, https_only: bool = False) -> Starlette:
    """The service over `store` (tito.serve.store.Store) grading with `pool`
    (tito.serve.worker.GraderPool; started and stopped with the app when `pool.autostart`)."""
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    templates = Jinja2Templates(env=environment)
    max_bytes = int(store.settings.max_upload_mb * 2**20)
    module = pool.course.module
    uploading = asyncio.Semaphore(UPLOADS_AT_ONCE)

    # ------------------------------------------------------------ helpers

    def csrf_token(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(32)
        return request.session["csrf"]

    def page(request: Request, name: str, status: int = 200, headers: dict | None = None, **context):
        context.update(user=signed_in(request), csrf=csrf_token(request), module=module)
        return templates.TemplateResponse(request, name, context, status_code=status, headers=headers)

    def signed_in(request: Request):
        token_id = request.session.get("token_id")
        return store.identity(token_id) if token_id else None

    def require(request: Request, role: str):
        user = signed_in(request)
        if user is None:
            raise HTTPException(401, "sign in with your token first")
        if user.role != role:
            raise HTTPException(403, f"this page is for the {role}")
        return user

    def bearer(request: Request, role: str = "student"):
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        user = store.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(401, "no valid token: send 'Authorization: Bearer <your token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if user.role != role:
            raise HTTPException(403, f"this is for a {role}'s token")
        return user

    def check_origin(request: Request) -> None:
        "A browser's form from another site (or an opaque `null` origin) is refused; no Origin is left to CSRF."
        origin = request.headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host")):
            raise HTTPException(403, "this form was sent from another site")

    def check_csrf(request: Request, sent) -> None:
        expected = request.session.get("csrf", "")
        if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise HTTPException(403, "the form is stale or came from another site: reload the page and try again")

    def rate_limit(user) -> None:
        refused = store.refusal(user.student)
        if refused:
            raise Refused(429, refused.reason, refused.retry_after)

    async def capped_body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
            raise Refused(413, too_large(int(declared)))
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes + 64 * 1024:   # room for the form's own fields and boundaries
                raise Refused(413, too_large(total, at_least=True))
            chunks.append(chunk)
        return b"".join(chunks)

    def too_large(size: int, at_least: bool = False) -> str:
        return (f"the upload is {'over ' if at_least else ''}{size / 2**20:.1f} MiB; at most "
                f"{store.settings.max_upload_mb:g} MiB is accepted: clear the outputs (Kernel > Restart "
                "Kernel and Clear Outputs), save and upload again")

    def accept(user, data: bytes) -> dict:
        "Validate and queue a notebook; the attempt, durable, or Refused."
        if len(data) > max_bytes:
            raise Refused(413, too_large(len(data)))
        if not data:
            raise Refused(400, "the upload is empty: choose your .ipynb file")
        try:
            read_submission(data)
        except InvalidNotebook as error:
            raise Refused(400, f"not a Jupyter notebook: {error}") from None
        queued = store.enqueue(user.student, data)
        if isinstance(queued, Refusal):
            raise Refused(429, queued.reason, queued.retry_after)
        pool.notify()
        return queued

    async def take(user, read) -> dict:
        """The rate limit, then `read()` the upload (at most UPLOADS_AT_ONCE bodies held in memory
        at once), then validate and queue it off the event loop (fsync takes a while)."""
        rate_limit(user)
        async with uploading:
            data = await read()
            return await run_in_threadpool(accept, user, data)

    def own_attempt(user, attempt_id: int) -> dict:
        attempt = store.attempt(attempt_id, student=None if user.role == "instructor" else user.student)
        if attempt is None:
            raise HTTPException(404, "no such attempt")
        return attempt

    def feedback_response(attempt: dict) -> Response:
        if attempt["status"] != "done":
            raise HTTPException(404, "this attempt has no feedback page (yet)")
        path = pool.course.feedback_page(store.attempt_dir(attempt["id"]), attempt["student"])
        if not path.is_file():
            raise HTTPException(404, "this attempt has no feedback page")
        return HTMLResponse(path.read_text(encoding="utf-8"), headers={"Content-Security-Policy": FEEDBACK_CSP})

    def describe(attempt: dict) -> dict:
        "An attempt as the API shows it (why grading failed is the instructor's: it may quote hidden text)."
        result = attempt["result"] if attempt["status"] == "done" else {}
        return {"id": attempt["id"], "number": attempt["number"], "student": attempt["student"],
                "status": attempt["status"], "received_at": attempt["received_at"],
                "finished_at": attempt["finished_at"], "score": result.get("score"),
                "max_score": result.get("max_score"), "grade_status": result.get("status"),
                "detail": result.get("detail"), "status_url": f"/api/submissions/{attempt['id']}",
                "feedback_url": f"/api/submissions/{attempt['id']}/feedback" if attempt["status"] == "done" else None}

    # ------------------------------------------------------------ pages

    async def home(request: Request):
        user = signed_in(request)
        if user is None:
            return page(request, "signin.html")
        return RedirectResponse("/instructor" if user.role == "instructor" else "/student", status_code=303)

    async def signin(request: Request):
        check_origin(request)
        form = await request.form(max_files=0, max_fields=4)
        check_csrf(request, form.get("csrf"))
        user = store.authenticate(str(form.get("token", "")).strip())
        if user is None:
            return page(request, "signin.html", status=401, error="that token is not valid: check it and try again")
        request.session.clear()
        request.session.update(token_id=user.token_id, csrf=secrets.token_urlsafe(32))
        return RedirectResponse("/", status_code=303)

    async def signout(request: Request):
        check_origin(request)
        form = await request.form(max_files=0, max_fields=4)
        check_csrf(request, form.get("csrf"))
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    def student_page(request, user, status=200, headers=None, **context):
        return page(request, "student.html", status=status, headers=headers, attempts=store.attempts(user.student),
                    max_mb=store.settings.max_upload_mb, limits=store.settings, **context)

    async def student(request: Request):
        return student_page(request, require(request, "student"))

    async def upload(request: Request):
        user = require(request, "student")
        check_origin(request)
        try:
            async def read_form() -> bytes:
                body = await capped_body(request)

                async def replay():
                    return {"type": "http.request", "body": body, "more_body": False}
                form = await Request(request.scope, replay).form(max_files=1, max_fields=4, max_part_size=1024)
                check_csrf(request, form.get("csrf"))
                upload_file = form.get("notebook")
                if upload_file is None or isinstance(upload_file, str):
                    raise Refused(400, "no notebook in the form: choose your .ipynb file")
                return await upload_file.read()
            attempt = await take(user, read_form)
        except Refused as refused:
            return student_page(request, user, status=refused.status, headers=refused.headers(), error=refused.reason)
        return RedirectResponse(f"/attempts/{attempt['id']}", status_code=303)

    async def attempt_page(request: Request):
        user = require(request, "student")
        attempt = own_attempt(user, request.path_params["attempt"])
        return page(request, "attempt.html", attempt=attempt, finished=attempt["status"] in FINISHED)

    async def attempt_feedback(request: Request):
        return feedback_response(own_attempt(require(request, "student"), request.path_params["attempt"]))

    # ------------------------------------------------------------ instructor

    async def instructor(request: Request):
        require(request, "instructor")
        from tito.grading.summary import format_summary, summarise
        latest = {attempt["student"]: attempt for attempt in store.latest()}
        graded = {attempt["student"]: attempt for attempt in store.latest_graded()}
        roster = sorted(store.holders("student") | set(latest))
        summary = format_summary(summarise(pool.grades_path)) if graded else ""
        return page(request, "instructor.html", roster=roster, latest=latest, graded=graded, summary=summary,
                    counts=store.counts())

    async def instructor_feedback(request: Request):
        return feedback_response(own_attempt(require(request, "instructor"), request.path_params["attempt"]))

    async def grades_csv(request: Request):
        require(request, "instructor")
        pool.write_grades()
        return Response(pool.grades_path.read_bytes(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="grades-{module}.csv"'})

    async def submitted_at_csv(request: Request):
        "When each student's graded attempt (the one in grades.csv) was received: `tito grade --submitted-at`'s input."
        require(request, "instructor")
        lines = ["student_id,submitted_at"] + [f"{a['student']},{a['received_at']}" for a in store.latest_graded()]
        return Response("\n".join(lines) + "\n", media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="submitted-at-{module}.csv"'})

    async def attempts_csv(request: Request):
        "Every attempt with its received-at time (UTC): what a deadline and late policy needs."
        require(request, "instructor")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["attempt", "student_id", "number", "received_at", "status", "score", "max_score",
                         "grade_status", "finished_at", "sha256"])
        for attempt in reversed(store.attempts()):
            result = attempt["result"] or {}
            writer.writerow([attempt["id"], attempt["student"], attempt["number"], attempt["received_at"],
                             attempt["status"], result.get("score", ""), result.get("max_score", ""),
                             result.get("status", ""), attempt["finished_at"] or "", attempt["sha256"]])
        return Response(buffer.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="attempts-{module}.csv"'})

    # ------------------------------------------------------------ the API (`tito submit`)

    async def api_submit(request: Request):
        user = bearer(request)
        try:
            attempt = await take(user, lambda: capped_body(request))
        except Refused as refused:
            return JSONResponse({"error": refused.reason}, status_code=refused.status, headers=refused.headers())
        return JSONResponse(describe(attempt), status_code=202)

    async def api_attempt(request: Request):
        return JSONResponse(describe(own_attempt(bearer(request), request.path_params["attempt"])))

    async def api_feedback(request: Request):
        return feedback_response(own_attempt(bearer(request), request.path_params["attempt"]))

    async def api_attempts(request: Request):
        return JSONResponse([describe(a) for a in store.attempts(bearer(request).student)])

    async def health(request: Request):
        return JSONResponse({"ok": True, "queue": store.counts(), "time": utc_iso(store.clock())})

    # ------------------------------------------------------------ errors

    async def http_error(request: Request, error: HTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)
        name = "signin.html" if error.status_code == 401 else "error.html"
        return page(request, name, status=error.status_code, headers=error.headers, error=error.detail,
                    code=error.status_code)

    routes = [
        Route("/", home),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/student", student),
        Route("/student/upload", upload, methods=["POST"]),
        Route("/attempts/{attempt:int}", attempt_page),
        Route("/attempts/{attempt:int}/feedback", attempt_feedback),
        Route("/instructor", instructor),
        Route("/instructor/grades.csv", grades_csv),
        Route("/instructor/attempts.csv", attempts_csv),
        Route("/instructor/submitted_at.csv", submitted_at_csv),
        Route("/instructor/attempts/{attempt:int}/feedback", instructor_feedback),
        Route("/api/submissions", api_submit, methods=["POST"]),
        Route("/api/submissions", api_attempts),
        Route("/api/submissions/{attempt:int}", api_attempt),
        Route("/api/submissions/{attempt:int}/feedback", api_feedback),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret_key or secrets.token_urlsafe(32), session_cookie="tito_session",
                   max_age=8 * 3600, same_site="strict", https_only=https_only),
    ]

    @asynccontextmanager
    async def lifespan(app):
        if pool.autostart:
            pool.start()
        try:
            yield
        finally:
            if pool.autostart:
                pool.stop()

    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error},
                     lifespan=lifespan)


@dataclass
class Service:
    app: Starlette
    store: object
    pool: object
    course: Path


def session_key(store) -> str:
    "The key that signs session cookies, made once per course folder (so sessions outlive a restart)."
    path = store.state / "session.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def build_service(course: Path, *, root: Path | None = None, workers: int | None = None, scheduler: str | None = None,
                  sandbox: bool = True, https_only: bool = False, autostart: bool = True, clock=time.time,
                  serve_settings=None, **limit_overrides) -> Service:
    """The service for the course folder `course` (its .tito-serve/ state), grading the assignment
    of the project `root` (found from `course` upwards) with settings.ini's limits and [serve] section."""
    from tito.grading.course import limits_for
    from tito.paths import project_root
    from tito.serve.store import ServeSettings, Store
    from tito.serve.worker import Course, GraderPool
    from tito.settings import load_settings
    course = Path(course).resolve()
    root = Path(root or project_root(course)).resolve()
    settings = load_settings(root)
    serve_settings = serve_settings or ServeSettings.from_ini(root)
    limits = limits_for(settings, sandbox=settings.sandbox and sandbox, **limit_overrides)
    store = Store(course, serve_settings, clock)
    pool = GraderPool(store, Course(root, course, settings, limits), workers or serve_settings.workers or 1,
                      scheduler, autostart)
    return Service(create_app(store, pool, secret_key=session_key(store), https_only=https_only), store, pool, course)
