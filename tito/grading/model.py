"""What flows through the grading stages, as data: a `Submission` (what a student handed in, as
found), the `Assignment` (what the course grades it against) and a `Result` (what grading decided:
status, points per cell, notes and flags as fields; `detail` is their text, rendered from `notes`).
"""
from dataclasses import dataclass, field
from pathlib import Path

from tito.grading.notebooks import content_hash, file_hash
from tito.grading.term import render_detail

STATE = ".tito-grade"          # journal and reference cache, inside the output folder
STATUSES = ("graded", "timeout", "crashed", "memory", "invalid", "missing")


class GradingError(RuntimeError):
    "The batch cannot be graded (not a student's fault): bad course, failing reference, full disk, busy folder."


@dataclass
class Submission:
    student: str
    path: Path | None          # None: no notebook to grade
    problem: str = ""          # why the path is odd or missing
    student_name: str = ""     # the name an LMS download gave (Canvas), kept in grades.csv
    lms_late: bool | None = None   # the LMS marked it late (None: the intake does not say)
    refused: str = ""          # why the file is not read at all (a link out of the submissions folder)

    def data(self) -> bytes | None:
        return self.path.read_bytes() if self.path is not None and not self.refused else None

    def digest(self) -> str:
        "The content hash of the submitted bytes (\"missing\" without a notebook), read in pieces."
        if self.refused:
            return content_hash(f"refused: {self.refused}".encode())   # a link is never read
        return file_hash(self.path) if self.path is not None else "missing"

    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None and not self.refused else 0

    def oversize(self, max_mb: float) -> str:
        "Why the file is too large to read (empty when it is not)."
        size = self.size()
        if size <= max_mb * 2**20:
            return ""
        return (f"the notebook is {size / 2**20:,.0f} MiB, above the {max_mb:g} MiB a submission may be: clear "
                f"its outputs (Kernel > Restart Kernel and Clear Outputs), save and submit again")


@dataclass
class Assignment:
    module: str
    notebook: str
    source: object             # the instructor's notebook (solutions, hidden tests)
    release: object            # the student version (visible tests only)
    source_hash: str
    graded: list               # [(grade_id, points)] of the autograded cells
    secrets: dict
    manual: list = field(default_factory=list)   # [(grade_id, points)] of the answers a person grades
    policy: object = None      # the library-use policy (tito.grading.policy.Policy), set by grade_batch
    misconceptions: list = field(default_factory=list)   # tito.grading.misconceptions.Misconception
    variants: dict = field(default_factory=dict)         # what each misconception prints: {id: {grade_id: records}}

    @property
    def max_score(self) -> float:
        return sum(points for _, points in self.graded) + sum(points for _, points in self.manual)


@dataclass
class Result:
    student: str
    status: str
    score: float
    max_score: float
    detail: str
    cells: dict = field(default_factory=dict)
    submission_hash: str = ""
    source_hash: str = ""
    seconds: float = 0.0       # wall time of the notebook's execution
    kernel_cpu: float = 0.0    # CPU seconds its kernel(s) used
    # What the term adds (tito.grading.term.finalise), filled when grades.csv is written:
    raw_score: float | None = None       # auto + manual, before the late penalty
    late_by_hours: float | None = None   # None: no deadline, or the time is unknown
    penalty: float = 0.0
    manual_score: float = 0.0
    needs_manual: float = 0.0            # points of written answers no person has graded yet
    late: str = ""                       # term.LATE_STATES, or "" without a [deadline]
    blank_answers: list = field(default_factory=list)   # written answers left as released: 0, nobody needs to read them
    messages: dict = field(default_factory=dict)   # {grade_id: [reasons]} of the failing checks
    student_name: str = ""                          # as the LMS names the student (Canvas)
    lms_late: bool | None = None                    # the LMS's own late flag (Canvas LATE), None when it has none
    flags: list = field(default_factory=list)  # structured integrity flags (library use: policy.Finding.as_flag)
    policy: str = ""           # digest of the library-use policy it was graded under
    notes: list = field(default_factory=list)   # [kind, text] pairs; `detail` is their texts joined
    withheld: bool = False     # the feedback page was withheld: it would have shown secret text
    sandboxed: bool | None = None   # graded in the sandbox; None in journals from before this field

    def graded_in_sandbox(self) -> bool:
        "Was this graded with the sandbox on? (Journals from before the `sandboxed` field say it in their notes.)"
        if self.sandboxed is not None:
            return self.sandboxed
        return not any(kind == "sandbox" for kind, _ in self.notes) and not self.detail.startswith("sandbox off")

    def flag(self, kind: str, text: str) -> None:
        "Add a note (kept structured in `notes`) and render `detail` again."
        if not self.notes and self.detail:   # a row from before notes were kept
            self.notes.append(["detail", self.detail])
        self.notes.append([kind, text])
        self.detail = render_detail(self.notes)

    def row(self, graded: list) -> list:
        optional = lambda value: "" if value is None else points_text(value)   # noqa: E731
        return ([spreadsheet_safe(self.student), points_text(self.score), points_text(self.max_score), self.status,
                 spreadsheet_safe(self.detail), spreadsheet_safe(self.student_name), optional(self.raw_score),
                 self.late, optional(self.late_by_hours), points_text(self.penalty), points_text(self.manual_score),
                 points_text(self.needs_manual), "" if self.lms_late is None else ("yes" if self.lms_late else "no"),
                 self.submission_hash, self.source_hash]
                + [points_text(self.cells.get(gid, 0.0)) for gid, _ in graded])


def points_text(points: float) -> str:
    "Points as grades.csv writes them: hundredths at most, no trailing zeros (12, 7.5, 3.33)."
    return f"{round(points, 2):g}"


def spreadsheet_safe(text: str) -> str:
    "Text a spreadsheet will not run as a formula (a file named '=cmd|...ipynb' is a student's to choose)."
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
