"""What a term adds to an autograded result: written answers graded by hand, the deadline, and
regrades — applied when grades.csv is written, never stored in the journal.

The journal keeps what the kernel run decided (the auto score per cell). Everything here is
recomputed on every run from the course's current state, so an extension added, a late policy
changed or a written answer graded in nbgrader's formgrader reaches grades.csv on the next
`tito grade` without running a single kernel again:

    raw_score = auto score + manual score
    score     = max(0, raw_score - penalty)
"""
import csv
import io
from dataclasses import dataclass, replace

from tito.grading.deadline import Lateness

# grades.csv: these columns, then one per autograded cell. Readers go by the header's names.
COLUMNS = ["student_id", "score", "max_score", "status", "detail", "student_name", "raw_score", "late", "late_by_hours",
           "penalty", "manual_score", "needs_manual", "lms_late", "submission_sha256", "tests_sha256"]
# the `late` column: "" without a [deadline]; else one of these
LATE_STATES = ("on_time", "late", "too_late", "unknown")


def late_state(lateness: Lateness | None) -> str:
    if lateness is None:
        return ""
    if not lateness.known:
        return "unknown"
    return "too_late" if lateness.too_late else "late" if lateness.late else "on_time"


@dataclass(frozen=True)
class Manual:
    "A student's written answers: points a person gave, and points still waiting for a person."
    score: float = 0.0
    pending: float = 0.0


def render_detail(notes: list) -> str:
    "The `detail` column: the texts of a row's notes ([kind, text] pairs), in order."
    return "; ".join(text for _, text in notes if text)


def finalise(result, lateness: Lateness | None, manual: Manual | None, ungraded: bool = False, notes: list = ()):
    """`result` as grades.csv shows it: manual points added, the late penalty taken off, and
    `notes` ([kind, text]) plus how the penalty was computed added to its notes and `detail` (the
    facts stay in their own fields). `ungraded`: missing or unreadable notebooks get neither
    manual points nor a penalty. The journal's `result` itself is left as it was."""
    manual = manual or Manual()
    raw = round(result.score + (0.0 if ungraded else manual.score), 2)
    penalty = 0.0 if ungraded or lateness is None else lateness.penalty(raw, result.max_score)
    # (written answers still to grade are the needs_manual column and the summary's count, not a reason in detail)
    kept = list(result.notes) or ([["detail", result.detail]] if result.detail else [])   # older rows had no notes
    added = list(notes) + ([] if ungraded or lateness is None else [["deadline", lateness.explain(raw, result.max_score)]])
    late = lateness.late_by_hours if lateness is not None and lateness.known else None
    return replace(result, score=round(max(0.0, raw - penalty), 2), raw_score=raw, penalty=round(penalty, 2),
                   late_by_hours=None if late is None else round(late, 2), manual_score=0.0 if ungraded else manual.score,
                   needs_manual=0.0 if ungraded else manual.pending, late=late_state(lateness),
                   notes=kept + added, detail=render_detail(kept + added))


@dataclass(frozen=True)
class Regrade:
    student: str
    old_score: float
    new_score: float
    cells_changed: tuple

    @property
    def change(self) -> float:
        return round(self.new_score - self.old_score, 2)


def regrades(previous: dict, current: dict, graded: list) -> list:
    """The students whose autograded score or cell points moved between `previous` and `current`
    ({student: Result} before the term is applied), largest change first."""
    moved = []
    for student, now in current.items():
        before = previous.get(student)
        if before is None:
            continue
        cells = tuple(gid for gid, _ in graded if round(before.cells.get(gid, 0.0), 2) != round(now.cells.get(gid, 0.0), 2))
        if cells or round(before.score, 2) != round(now.score, 2):
            moved.append(Regrade(student, round(before.score, 2), round(now.score, 2), cells))
    return sorted(moved, key=lambda r: (-abs(r.change), r.student))


def regrades_csv(moved: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student_id", "old_score", "new_score", "cells_changed"])
    for regrade in moved:
        writer.writerow([regrade.student, f"{regrade.old_score:g}", f"{regrade.new_score:g}", " ".join(regrade.cells_changed)])
    return buffer.getvalue()


def regrade_message(moved: list, regraded: int, top: int = 5) -> str:
    "What the instructor reads before publishing: whom a changed check touched."
    if not regraded:
        return ""
    head = f"{len(moved)} students' scores changed" if len(moved) != 1 else "1 student's score changed"
    lines = [f"{head} (of {regraded} regraded after the source changed); see regrades.csv"]
    for regrade in moved[:top]:
        lines.append(f"  {regrade.student:<24} {regrade.old_score:g} -> {regrade.new_score:g} ({regrade.change:+g})"
                     + (f"  [{', '.join(regrade.cells_changed)}]" if regrade.cells_changed else ""))
    return "\n".join(lines)
