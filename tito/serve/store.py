"""The durable state of `tito serve`: tokens, the attempts queue and the uploads, in `.tito-serve/`.

Inside the course folder's `.tito-serve/`:

- `serve.db` (SQLite, WAL, synchronous=FULL): the tokens (their SHA-256 only) and the attempts,
  which are also the grading queue (queued -> grading -> done | failed);
- `uploads/<sha256[:2]>/<sha256>.ipynb`: every accepted notebook, content-addressed, written to a
  temporary file, fsync'd, renamed and its folder fsync'd *before* its attempt row is committed,
  and the row is committed before the service answers "received";
- `attempts/<id>/`: what grading one attempt wrote (feedback page, autograded notebook).

A service killed at any point loses nothing it said "received" to: on start, attempts left in
`grading` go back to `queued`. One student's attempts are graded one at a time, in the order
received, so two uploads at once are both kept and the later one is the latest.
"""
import configparser
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STATE = ".tito-serve"
ROLES = ("student", "instructor")
# Student ids become folder names (feedback/<student>/): letters, digits, '.', '_', '-' only.
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^tt_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY, student TEXT NOT NULL, role TEXT NOT NULL,
    digest TEXT NOT NULL, issued_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, student TEXT NOT NULL, number INTEGER NOT NULL,
    received_at TEXT NOT NULL, received_epoch REAL NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    status TEXT NOT NULL, started_at TEXT, finished_at TEXT, result TEXT,
    grading_runs INTEGER NOT NULL DEFAULT 0, UNIQUE (student, number));
CREATE INDEX IF NOT EXISTS attempts_by_status ON attempts (status, id);
CREATE INDEX IF NOT EXISTS attempts_by_student ON attempts (student, id);
"""


@dataclass(frozen=True)
class ServeSettings:
    "The [serve] section of settings.ini (every key optional, defaults as shipped)."
    attempts_per_hour: int = 5
    min_gap_seconds: int = 30
    max_upload_mb: float = 16
    workers: int = 2

    @classmethod
    def from_ini(cls, root: Path) -> "ServeSettings":
        parser = configparser.ConfigParser()
        path = Path(root) / "settings.ini"
        parser.read(path, encoding="utf-8")
        section = parser["serve"] if parser.has_section("serve") else {}
        values = {}
        for key, kind in (("attempts_per_hour", int), ("min_gap_seconds", int), ("max_upload_mb", float),
                          ("workers", int)):
            if key in section:
                try:
                    values[key] = kind(section[key])
                except ValueError:
                    raise ValueError(f"{path}: [serve] {key} must be a number, got {section[key]!r}") from None
                if values[key] < 0:
                    raise ValueError(f"{path}: [serve] {key} must not be negative, got {section[key]!r}")
        return cls(**values)


def utc_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def valid_student_id(student: str) -> bool:
    return bool(STUDENT_ID.match(student)) and student not in (".", "..")


def _digest(secret: str) -> str:
    # The secret is 32 random bytes: a fast hash is enough (a slow one protects guessable passwords).
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Identity:
    student: str          # the student id, or the instructor's name
    role: str
    token_id: str


@dataclass(frozen=True)
class Refusal:
    "Why an upload is refused now, and how many seconds until the next one is accepted."
    reason: str
    retry_after: int


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class Store:
    def __init__(self, course: Path, settings: ServeSettings = ServeSettings(), clock=time.time):
        self.course = Path(course).resolve()
        self.state = self.course / STATE
        self.uploads = self.state / "uploads"
        self.attempts_dir = self.state / "attempts"
        self.settings, self.clock = settings, clock
        for folder in (self.state, self.uploads, self.attempts_dir):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)   # token hashes and every student's work: the instructor's only
        self.path = self.state / "serve.db"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def hold_lock(self) -> None:
        """Hold the course folder's service lock for this process's life: a second `tito serve`
        on the same folder would queue the first one's attempts again and grade them twice."""
        import fcntl
        self._lock = open(self.state / "serve.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another `tito serve` is running on {self.course}: stop it first") from None

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self):
        "BEGIN IMMEDIATE: one writer at a time, so check-then-insert cannot race."
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ tokens

    def issue_token(self, student: str, role: str = "student") -> str:
        "A new token for `student` (any earlier one stops working). Only its hash is kept."
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if not valid_student_id(student):
            raise ValueError(f"student id {student!r}: expected letters, digits, '.', '_' or '-' "
                             "(at most 64, starting with a letter or digit)")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._transaction() as db:
            db.execute("DELETE FROM tokens WHERE student = ? AND role = ?", (student, role))
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                       (token_id, student, role, _digest(secret), utc_iso(self.clock())))
        return f"tt_{token_id}_{secret}"

    def holders(self, role: str = "student") -> set:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT student FROM tokens WHERE role = ?", (role,))}

    def authenticate(self, token) -> Identity | None:
        "Who holds `token`, or None. The secret is compared in constant time."
        match = _TOKEN.match(token or "") if isinstance(token, str) else None
        if not match:
            return None
        with self._connect() as db:
            row = db.execute("SELECT * FROM tokens WHERE token_id = ?", (match["id"],)).fetchone()
        expected = row["digest"] if row else _digest("x" * 43)   # same work whether or not the id exists
        if not hmac.compare_digest(expected, _digest(match["secret"])) or row is None:
            return None
        return Identity(row["student"], row["role"], row["token_id"])

    def identity(self, token_id) -> Identity | None:
        "The holder of a token id still valid (a session's token may have been re-issued since)."
        with self._connect() as db:
            row = db.execute("SELECT * FROM tokens WHERE token_id = ?", (str(token_id),)).fetchone()
        return Identity(row["student"], row["role"], row["token_id"]) if row else None

    # ------------------------------------------------------------ uploads and the queue

    def blob_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.uploads / sha256[:2] / f"{sha256}.ipynb"

    def write_blob(self, data: bytes) -> str:
        "Keep `data` on disk under its SHA-256 (fsync'd file and folder); returns the hash."
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if path.exists() and path.stat().st_size == len(data):
            return sha256
        path.parent.mkdir(exist_ok=True)
        temp = path.with_name(f".{sha256}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return sha256

    def _refusal(self, db, student: str, now: float) -> Refusal | None:
        hour = now - 3600
        recent = [row[0] for row in db.execute(
            "SELECT received_epoch FROM attempts WHERE student = ? AND received_epoch > ? ORDER BY received_epoch",
            (student, hour))]
        limit, gap = self.settings.attempts_per_hour, self.settings.min_gap_seconds
        if limit and len(recent) >= limit:
            wait = recent[-limit] + 3600 - now
            return Refusal(f"{limit} attempts an hour is the limit; the next is accepted at "
                           f"{utc_iso(now + wait)}", max(1, int(wait + 0.999)))
        if gap and recent and now - recent[-1] < gap:
            wait = recent[-1] + gap - now
            return Refusal(f"attempts must be {gap} s apart; the next is accepted at {utc_iso(now + wait)}",
                           max(1, int(wait + 0.999)))
        return None

    def refusal(self, student: str) -> Refusal | None:
        "Would an upload by `student` be refused by the rate limit now?"
        with self._connect() as db:
            return self._refusal(db, student, self.clock())

    def enqueue(self, student: str, data: bytes) -> dict | Refusal:
        """Keep the upload on disk, then queue it (both durable before this returns); or the
        rate limit's refusal. The check and the insert are one transaction."""
        sha256 = self.write_blob(data)
        with self._transaction() as db:
            now = self.clock()
            refused = self._refusal(db, student, now)
            if refused:
                return refused
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE student = ?",
                                (student,)).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO attempts (student, number, received_at, received_epoch, sha256, size, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'queued')", (student, number, utc_iso(now), now, sha256, len(data)))
            attempt_id = cursor.lastrowid
        return self.attempt(attempt_id)

    def recover(self) -> int:
        "After a crash: attempts left half-graded go back to the queue. Returns how many."
        with self._transaction() as db:
            return db.execute("UPDATE attempts SET status = 'queued', started_at = NULL "
                              "WHERE status = 'grading'").rowcount

    def claim(self) -> dict | None:
        "The oldest queued attempt of a student none of whose attempts is being graded, now `grading`."
        with self._transaction() as db:
            row = db.execute("SELECT id FROM attempts WHERE status = 'queued' AND student NOT IN "
                             "(SELECT student FROM attempts WHERE status = 'grading') ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE attempts SET status = 'grading', started_at = ?, grading_runs = grading_runs + 1 "
                       "WHERE id = ?", (utc_iso(self.clock()), row[0]))
        return self.attempt(row[0])

    def finish(self, attempt_id: int, status: str, result: dict) -> None:
        with self._transaction() as db:
            db.execute("UPDATE attempts SET status = ?, finished_at = ?, result = ? WHERE id = ?",
                       (status, utc_iso(self.clock()), json.dumps(result), attempt_id))

    # ------------------------------------------------------------ reading

    @staticmethod
    def _row(row) -> dict:
        attempt = dict(row)
        attempt["result"] = json.loads(attempt["result"]) if attempt["result"] else None
        return attempt

    def attempt(self, attempt_id: int, student: str | None = None) -> dict | None:
        "One attempt; with `student`, only if it is theirs."
        with self._connect() as db:
            row = db.execute("SELECT * FROM attempts WHERE id = ?", (int(attempt_id),)).fetchone()
        if row is None or (student is not None and row["student"] != student):
            return None
        return self._row(row)

    def _select(self, where: str, params: tuple = ()) -> list:
        with self._connect() as db:
            return [self._row(row) for row in db.execute(f"SELECT * FROM attempts WHERE {where}", params).fetchall()]

    def attempts(self, student: str | None = None) -> list:
        "Every attempt (of `student`), newest first."
        if student is None:
            return self._select("1 ORDER BY id DESC")
        return self._select("student = ? ORDER BY id DESC", (student,))

    def latest(self) -> list:
        "Each student's latest attempt (graded or not), by student."
        return self._select("id IN (SELECT MAX(id) FROM attempts GROUP BY student) ORDER BY student")

    def latest_graded(self) -> list:
        "Each student's latest attempt that grading finished, by student."
        return self._select("id IN (SELECT MAX(id) FROM attempts WHERE status = 'done' GROUP BY student) "
                            "ORDER BY student")

    def counts(self) -> dict:
        with self._connect() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM attempts GROUP BY status").fetchall())

    def attempt_dir(self, attempt_id: int) -> Path:
        return self.attempts_dir / str(int(attempt_id))
