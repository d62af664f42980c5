"""The journal: one JSON file per student under `.tito-grade/results/`, the `Result` of their last
grading, written (whole, atomically) only after the gradebook has committed that student's row.
A rerun reuses a journaled result when nothing it depended on changed (`reusable`), and grades
the rest; a killed grader loses at most the results it had not committed yet.
"""
import json
from dataclasses import asdict
from pathlib import Path

from tito.grading.intake import atomic_write
from tito.grading.model import Assignment, Result


def path(state: Path, student: str) -> Path:
    return Path(state) / "results" / f"{student}.json"


def load(state: Path, student: str) -> Result | None:
    "The journaled result of `student`, or None (never graded, or a file that cannot be read)."
    try:
        return Result(**json.loads(path(state, student).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def save(state: Path, result: Result) -> None:
    atomic_write(path(state, result.student), json.dumps(asdict(result)))


def reusable(previous: Result, digest: str, assignment: Assignment, sandboxed: bool) -> bool:
    "Was `previous` graded from the same bytes, the same source and policy, with the sandbox as now?"
    return (previous.submission_hash == digest and previous.source_hash == assignment.source_hash
            and previous.graded_in_sandbox() == sandboxed and previous.policy == assignment.policy.digest())
