"""What a class's grades say at a glance: mean, median, a histogram of scores, and the checks
(and concepts) the class struggled with most. Read from `grades.csv`, so it works on any batch,
old or new, and never disagrees with the file the instructor hands on. The concepts come from
each student's structured result (`Result.messages`: the reasons per failing cell), from the
batch in memory or its journal beside grades.csv; only a grades.csv without either (written by
another tool, or by hand) has them read back from its `detail` text."""
import csv
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FIXED_COLUMNS = ["student_id", "score", "max_score", "status", "detail"]
# Columns about the submission, not a graded cell (absent from older files): read by name.
_CELLS = re.compile(r" \[(?P<cells>[\w\-, ]+)\]$")
# `detail` is "; "-joined: first the grader's notes (sandbox, file, restored cells, what the kernel did),
# then one "concept [cells]" per failed concept -- and a concept may itself contain "; ".
_NOTE = re.compile(r"^(sandbox off|cell \d+ |cells \d+|the kernel|the notebook|the grading kernel|a new kernel|"
                   r"output |edited test cells|deleted |duplicated grade ids|unknown grade ids|no notebook|"
                   r"internal grading error|.*\.ipynb)")


def concepts_of_result(result) -> list:
    "The concepts a graded result failed: the first reason of each failing cell, as `detail` shows them."
    return list(dict.fromkeys(reasons[0] for reasons in result.messages.values() if reasons))


def concepts_of(detail: str) -> list:
    """The concepts a row's `detail` names, each whole even when it contains '; ' (for a grades.csv
    with no results beside it: the grader's notes are told from concepts by their known openings)."""
    segments = [part.strip() for part in detail.split("; ") if part.strip()]
    while segments and _NOTE.match(segments[0]) and not _CELLS.search(segments[0]):
        segments.pop(0)
    concepts, pending = [], []
    for segment in segments:
        pending.append(segment)
        match = _CELLS.search(segment)
        if match:
            pending[-1] = segment[:match.start()]
            concepts.append("; ".join(pending))
            pending = []
    return concepts


@dataclass
class CellStat:
    grade_id: str
    points: float        # the cell's full marks (the most any student got, or its max when known)
    mean: float          # mean points over graded students
    missed: int          # students who did not get full points


@dataclass
class ClassSummary:
    students: int
    max_score: float
    scores: list                      # every student's score, ungraded ones as 0
    by_status: Counter
    cells: list = field(default_factory=list)        # CellStat, hardest first
    concepts: list = field(default_factory=list)     # (reason, students), most frequent first
    late: Counter = field(default_factory=Counter)   # the `late` column's states (on_time, late, too_late, unknown)
    needs_manual: int = 0                            # students with written answers still to grade by hand

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores) if self.scores else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.scores) if self.scores else 0.0

    def histogram(self, bins: int = 10) -> list:
        "Counts of scores in `bins` equal ranges of the maximum; full marks fall in the last."
        counts = [0] * bins
        for score in self.scores:
            share = score / self.max_score if self.max_score else 0.0
            counts[min(bins - 1, max(0, int(share * bins)))] += 1
        return counts


def read_grades(csv_path: Path) -> tuple:
    "(rows as dicts, graded-cell columns) of a grades.csv; a wrong header is an error naming it."
    path = Path(csv_path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `tito grade` first")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [name for name in FIXED_COLUMNS if name not in header]
        if missing:
            raise ValueError(f"{path}: expected columns {FIXED_COLUMNS + ['<graded cells>']}, got {header} "
                             f"(missing {missing})")
        from tito.grading.term import COLUMNS
        return list(reader), [name for name in header if name not in COLUMNS]


def _results_beside(csv_path: Path, rows: list) -> dict:
    "{student: Result} journaled beside grades.csv by `tito grade` (its course folder's .tito-grade/results/)."
    from tito.grading import journal
    from tito.grading.model import STATE
    state = Path(csv_path).parent / STATE
    if not (state / "results").is_dir():
        return {}
    found = {row["student_id"]: journal.load(state, row["student_id"]) for row in rows}
    return {student: result for student, result in found.items() if result is not None}


def summarise(csv_path: Path, cell_points: dict | None = None, results=None) -> ClassSummary:
    """The class summary of a grades.csv. `cell_points` ({grade_id: points}) gives each cell's full
    marks; `results` (the batch's `Result`s) give the concepts, else the journal beside the file."""
    rows, cells = read_grades(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no student")
    max_score = max(float(r["max_score"]) for r in rows)
    graded = [r for r in rows if r["status"] != "missing"]
    stats = []
    for gid in cells:
        values = [float(r[gid] or 0) for r in graded]
        full = (cell_points or {}).get(gid, max(values, default=0.0))
        stats.append(CellStat(gid, full, statistics.fmean(values) if values else 0.0,
                              sum(v < full - 1e-9 for v in values)))
    stats.sort(key=lambda s: (-s.missed, s.mean / s.points if s.points else 0.0, s.grade_id))
    by_student = {r.student: r for r in results} if results is not None else _results_beside(csv_path, rows)
    concepts = Counter()
    for row in graded:
        result = by_student.get(row["student_id"])
        same = result is not None and result.submission_hash == row.get("submission_sha256", result.submission_hash)
        concepts.update(set(concepts_of_result(result) if same else concepts_of(row["detail"])))
    return ClassSummary(students=len(rows), max_score=max_score, scores=[float(r["score"]) for r in rows],
                        by_status=Counter(r["status"] for r in rows), cells=stats,
                        concepts=concepts.most_common(), late=Counter(r.get("late") for r in rows if r.get("late")),
                        needs_manual=sum(float(r.get("needs_manual") or 0) > 0 for r in rows))


def format_summary(summary: ClassSummary, top: int = 5, width: int = 30) -> str:
    "The summary as text: numbers, a histogram of bars, the hardest checks and concepts."
    lines = [f"{summary.students} students: mean {summary.mean:.1f}/{summary.max_score:g}, "
             f"median {summary.median:g}/{summary.max_score:g}; "
             + ", ".join(f"{count} {status}" for status, count in sorted(summary.by_status.items()))]
    if summary.late:
        lines.append("deadline: " + ", ".join(f"{summary.late[state]} {state.replace('_', ' ')}"
                                              for state in ("on_time", "late", "too_late", "unknown") if summary.late[state]))
    if summary.needs_manual:
        lines.append(f"written answers: {summary.needs_manual} students still to grade by hand (nbgrader formgrader)")
    counts = summary.histogram()
    biggest = max(counts) or 1
    step = summary.max_score / len(counts)
    for index, count in enumerate(counts):
        low, high = index * step, (index + 1) * step
        bracket = "]" if index == len(counts) - 1 else ")"
        lines.append(f"  [{low:5.1f}, {high:5.1f}{bracket} {'█' * round(width * count / biggest):<{width}} {count}")
    hardest = [c for c in summary.cells if c.missed][:top]
    if hardest:
        lines.append("checks most often missed:")
        lines += [f"  {c.grade_id:<20} missed by {c.missed}/{summary.students - summary.by_status.get('missing', 0)}"
                  f", mean {c.mean:.1f}/{c.points:g}" for c in hardest]
    if summary.concepts:
        lines.append("concepts the class struggled with:")
        lines += [f"  {students:>3} × {reason[:110]}" for reason, students in summary.concepts[:top]]
    return "\n".join(lines)


def save_histogram(summary: ClassSummary, png_path: Path) -> Path:
    "Write the score histogram as a PNG (matplotlib, no display needed)."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = summary.histogram()
    step = summary.max_score / len(counts)
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.bar([step * (i + 0.5) for i in range(len(counts))], counts, width=step * 0.9, color="#4c72b0")
    axis.axvline(summary.mean, color="#c44e52", linestyle="--", label=f"mean {summary.mean:.1f}")
    axis.axvline(summary.median, color="#55a868", linestyle=":", label=f"median {summary.median:g}")
    axis.set_xlim(0, summary.max_score)
    axis.set_xlabel(f"score (of {summary.max_score:g})")
    axis.set_ylabel("students")
    axis.set_title(f"Module 09 scores, {summary.students} students")
    axis.legend()
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return png_path
