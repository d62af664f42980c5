"""Deadlines, grace, late penalties and extensions (settings.ini `[deadline]`).

    [deadline]
    due = 2026-12-10T23:59:00+00:00     ; ISO 8601 with an offset
    grace_minutes = 15                   ; on time until due + grace
    late_penalty_per_day = 10            ; percent of max_score per started day after due + grace
    max_late_days = 3                    ; later still: graded for feedback, but scores 0
    extensions = extensions.csv          ; student_id,due (ISO) or student_id,extra_days

When a submission was handed in comes from nbgrader's `timestamp.txt` beside it, else from an
`--submitted-at` CSV (`student_id,submitted_at`, as LMS exports give), else it is unknown and no
penalty is applied. Everything here is plain data: `Lateness` keeps the facts as fields and
`Lateness.explain()` renders them for `detail` at the edge.
"""
import configparser
import csv
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dateutil import parser as dateparser
from dateutil import tz as datetz

DAY_HOURS = 24.0


class DeadlineError(ValueError):
    "The course's deadline settings or one of its CSV files cannot be read (names what and where)."


def parse_time(text: str, where: str = "a time") -> datetime:
    """An aware UTC datetime from ISO 8601 (`2026-12-10T23:59:00+00:00`, `...Z`) or nbgrader's
    `timestamp.txt` form (`2026-12-10 23:59:00.123456 UTC`). A time without an offset is taken as
    UTC, as nbgrader does."""
    text = (text or "").strip()
    if not text:
        raise DeadlineError(f"{where}: expected a date and time such as 2026-12-10T23:59:00+00:00, got nothing")
    parts = text.split(" ")
    try:
        if len(parts) == 3 and not parts[2][:1] in "+-":   # nbgrader: "<date> <time> <zone name>"
            zone = datetz.gettz(parts[2])
            if zone is None:
                raise ValueError(f"unknown time zone {parts[2]!r}")
            moment = dateparser.parse(" ".join(parts[:2])).replace(tzinfo=zone)
        else:
            moment = dateparser.isoparse(text) if "T" in text else dateparser.parse(text)
    except (ValueError, OverflowError) as error:
        raise DeadlineError(f"{where}: expected a date and time such as 2026-12-10T23:59:00+00:00, "
                            f"got {text[:60]!r} ({error})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Lateness:
    "How late one submission was and what it costs. `submitted_at` None: the time is unknown."
    submitted_at: datetime | None
    due: datetime
    extended: bool = False          # the student's own due date (extensions.csv)
    late_by_hours: float = 0.0      # after the due date (0 when on time or unknown)
    started_days: int = 0           # days begun after due + grace (what the penalty counts)
    penalty_percent: float = 0.0    # of max_score, for started_days
    too_late: bool = False          # past max_late_days: scores 0
    max_late_days: int | None = None

    @property
    def known(self) -> bool:
        return self.submitted_at is not None

    @property
    def late(self) -> bool:
        return self.started_days > 0

    def penalty(self, raw_score: float, max_score: float) -> float:
        "Points taken off `raw_score` (never more than it has)."
        if self.too_late:
            return raw_score
        return min(raw_score, round(max_score * self.penalty_percent / 100.0, 2))

    def explain(self, raw_score: float, max_score: float) -> str:
        "One line for `detail`, e.g. 'submitted 26.5 h late: 2 started days × 10 % of 60 = 12 points'."
        own = " (extended due date)" if self.extended else ""
        if not self.known:
            return f"submission time unknown: no late penalty applied{own}"
        if self.late_by_hours <= 0:
            return ""
        hours = f"submitted {self.late_by_hours:.1f} h late{own}"
        if self.too_late:
            return (f"{hours}: {self.started_days} started days, past the {self.max_late_days} late days allowed: "
                    f"graded for feedback, scores 0")
        if not self.late:
            return f"{hours}, within the grace period: no penalty"
        rate = self.penalty_percent / self.started_days if self.started_days else 0.0
        days = "day" if self.started_days == 1 else "days"
        return (f"{hours}: {self.started_days} started {days} × {rate:g} % of {max_score:g} = "
                f"{self.penalty(raw_score, max_score):g} points")


@dataclass(frozen=True)
class DeadlinePolicy:
    due: datetime
    grace_minutes: float = 0.0
    late_penalty_per_day: float = 0.0
    max_late_days: int | None = None
    extensions: dict = field(default_factory=dict)   # student_id -> due datetime

    def due_for(self, student: str) -> datetime:
        return self.extensions.get(student, self.due)

    def assess(self, student: str, submitted_at: datetime | None) -> Lateness:
        due = self.due_for(student)
        extended = student in self.extensions
        if submitted_at is None:
            return Lateness(None, due, extended, max_late_days=self.max_late_days)
        late = (submitted_at - due).total_seconds() / 3600.0
        after_grace = late - self.grace_minutes / 60.0
        days = math.ceil(after_grace / DAY_HOURS - 1e-12) if after_grace > 0 else 0
        too_late = self.max_late_days is not None and days > self.max_late_days
        return Lateness(submitted_at, due, extended, late_by_hours=max(0.0, late), started_days=days,
                        penalty_percent=days * self.late_penalty_per_day, too_late=too_late,
                        max_late_days=self.max_late_days)


def load_policy(root: Path) -> DeadlinePolicy | None:
    "The `[deadline]` section of `root/settings.ini`, or None when there is none (nothing changes)."
    path = Path(root) / "settings.ini"
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    if not parser.has_section("deadline"):
        return None
    section = parser["deadline"]
    where = f"{path} [deadline]"

    def number(key, default, kind=float):
        raw = section.get(key, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise DeadlineError(f"{where} {key}: expected a {'whole ' if kind is int else ''}number, got {raw!r}") from None
        if value < 0:
            raise DeadlineError(f"{where} {key}: expected a number ≥ 0, got {raw!r}")
        return value

    due = parse_time(section.get("due", ""), f"{where} due")
    extensions = {}
    if section.get("extensions", "").strip():
        extensions = read_extensions(Path(root) / section["extensions"].strip(), due)
    return DeadlinePolicy(due=due, grace_minutes=number("grace_minutes", 0.0),
                          late_penalty_per_day=number("late_penalty_per_day", 0.0),
                          max_late_days=number("max_late_days", None, int), extensions=extensions)


def _rows(path: Path, value_columns: tuple) -> list:
    "(line number, student_id, {column: text}) of a small CSV with a student_id column."
    if not path.is_file():
        raise DeadlineError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "student_id" not in columns or not any(c in columns for c in value_columns):
            raise DeadlineError(f"{path}: expected a header student_id,{' or '.join(value_columns)}; "
                                f"got {','.join(columns) or 'nothing'}")
        reader.fieldnames = columns
        return [(number + 2, (row.get("student_id") or "").strip(), row) for number, row in enumerate(reader)
                if (row.get("student_id") or "").strip()]


def read_extensions(path: Path, due: datetime) -> dict:
    "extensions.csv: `student_id,due` (a new ISO due date) or `student_id,extra_days`."
    extensions = {}
    for line, student, row in _rows(path, ("due", "extra_days")):
        if (row.get("due") or "").strip():
            extensions[student] = parse_time(row["due"], f"{path} line {line}")
        else:
            raw = (row.get("extra_days") or "").strip()
            try:
                extensions[student] = due + timedelta(days=float(raw))
            except ValueError:
                raise DeadlineError(f"{path} line {line}: expected extra_days as a number, got {raw!r}") from None
    return extensions


def read_submitted_at(path: Path) -> dict:
    "`--submitted-at FILE.csv`: student_id,submitted_at -> {student: datetime}."
    return {student: parse_time(row["submitted_at"], f"{path} line {line}")
            for line, student, row in _rows(Path(path), ("submitted_at",))}


def timestamp_beside(notebook: Path | None) -> tuple:
    """(time, problem) from nbgrader's `timestamp.txt` in the submission's folder
    (submitted/<student>/<assignment>/): (None, "") when there is none, (None, why) when it cannot be
    read — a bad timestamp makes the time unknown, it never stops the batch."""
    if notebook is None:
        return None, ""
    stamp = Path(notebook).parent / "timestamp.txt"
    if not stamp.exists() and not stamp.is_symlink():
        return None, ""
    if stamp.is_symlink() or not stamp.is_file():
        return None, "timestamp.txt is not a plain file: submission time unknown"
    try:
        return parse_time(stamp.read_text(encoding="utf-8", errors="replace")[:200], "timestamp.txt"), ""
    except (DeadlineError, OSError) as error:
        return None, f"{error}: submission time unknown"
