"""Per-check and per-cell scores of an executed notebook, decided in the grader's own process.

A graded cell's checks are the records its reference run printed, grouped by concept; the cell's
points are split evenly over them (or as a check names its points). A check earns its share iff
every one of its records was printed by the submission in that same cell, once, with the same
shape and values (np.allclose, rtol=1e-5, atol=1e-6). An error that stopped the cell costs the
checks that had not recorded yet; stderr is not an error. The student's process never decides
anything: its own verdicts (asserts) only help the student read what went wrong."""
import re
from dataclasses import dataclass, field

import numpy as np

from tito.grading.notebooks import grade_id, is_graded, strip_ansi
from tinytorch.record import MARKER, Record, decode_records

RTOL, ATOL = 1e-5, 1e-6
MAX_MESSAGE = 200


def stdout_text(cell) -> str:
    "Everything the cell printed to stdout (records are printed there)."
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else str(text))
    return "".join(parts)


def first_error(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return output
    return None


def short(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# IPython names each cell's code after a hash of its text: "(3440546843.py, line 4)" means
# nothing to a student (and changes with every edit of the cell), "(line 4)" does.
CELL_FILE = re.compile(r"\([^()]*?\b\d+\.py, line (\d+)\)")


# What an axis of an (N, C, H, W) array holds, for explaining an IndexError in the student's loops.
AXES = {0: "images (N)", 1: "channels (C)", 2: "rows (H)", 3: "columns (W)"}
OUT_OF_BOUNDS = re.compile(r"index (-?\d+) is out of bounds for axis (\d+) with size (\d+)")
FRAME = re.compile(r"\bin ([A-Za-z]\w*)\s*$")


def _raised_in(error) -> str:
    "The innermost named function of the traceback (the student's or the course's; hidden helpers start with _)."
    names = [match[1] for line in error.get("traceback", []) or []
             for match in [FRAME.search(strip_ansi(str(line)).splitlines()[0] if str(line).strip() else "")]
             if match]
    return names[-1] if names else ""


def explain_error(name: str, value: str, where: str) -> str:
    "An error in a student's words: which index left which axis, which shapes did not line up."
    inside = f" in {where}" if where else ""
    bounds = OUT_OF_BOUNDS.search(value)
    if name == "IndexError" and bounds:
        index, axis, size = (int(g) for g in bounds.groups())
        axis_name = AXES.get(axis, f"axis {axis}")
        return (f"IndexError{inside}: index {index} left axis {axis} ({axis_name} of an (N, C, H, W) array, "
                f"size {size}): a loop or a window start runs past the end of that axis; check its range, and "
                f"that a window starting at out * stride + k stays inside the padded input")
    if name == "ValueError" and "could not be broadcast" in value:
        return (f"ValueError{inside}: {short(value, 120)}: the two arrays' shapes do not line up; print both "
                f"shapes and compare them with the shape contract")
    return ""


def error_summary(error) -> str:
    name = short(error.get("ename", "Error"), 60)
    value = CELL_FILE.sub(r"(line \1)", str(error.get("evalue", ""))).strip().splitlines()
    # Record marker lines are protocol data, never a message.
    value = [line for line in value if MARKER not in line]
    if not value or not value[0].strip():
        return name
    explained = explain_error(name, value[0], _raised_in(error))
    if explained:
        return short(explained, 300)
    # A failing check's message is its concept in a student's words: show it alone.
    return short(value[0]) if name == "AssertionError" else f"{name}: {short(value[0])}"


def reference_records_of(executed) -> dict:
    "{grade_id: {name: Record}} printed by the graded cells of an executed notebook."
    return {grade_id(c): decode_records(stdout_text(c)) for c in executed.cells
            if is_graded(c) and c.cell_type == "code" and grade_id(c)}


def record_matches(expected: Record, printed: Record | None) -> bool:
    "The one comparison of a submission's record with the reference's (float64, RTOL/ATOL)."
    return (printed is not None and not printed.repeated and printed.value.shape == expected.value.shape
            and bool(np.allclose(printed.value, expected.value, rtol=RTOL, atol=ATOL)))


@dataclass(frozen=True)
class CheckResult:
    "One check of a graded cell: the reference records that share a concept, and what they earned."
    concept: str
    points: float
    earned: float
    records: tuple                 # the reference's record names
    missing: bool = False          # at least one record was not printed (the cell stopped before it)
    how: str = ""                  # how the first wrong record differs (shape, sign, scale, one channel, …)

    @property
    def passed(self) -> bool:
        return self.earned == self.points


@dataclass(frozen=True)
class CellScore:
    points: float                  # earned, rounded to hundredths
    max_points: float
    checks: tuple = ()             # CheckResult per concept, in the reference's order
    reasons: tuple = ()            # why points were lost (the error first), in a student's words
    printed: dict = field(default_factory=dict)   # the records the submission printed: {name: Record}


def how_it_differs(got: Record, expected: Record) -> str:
    """What a wrong record has in common with the right one, in a student's words: the shape, the
    sign, a scale or an offset, the one channel (axis 1) or image (axis 0) that is off, or how many
    values differ. Never the values themselves (a hidden check's inputs stay hidden)."""
    a, b = np.asarray(got.value, dtype=np.float64), np.asarray(expected.value, dtype=np.float64)
    if got.repeated:
        return "the result was printed more than once"
    if a.shape != b.shape:
        return f"the result has shape {a.shape}, expected {b.shape}"
    if not np.isfinite(a).all():
        return f"{int((~np.isfinite(a)).sum())} of {a.size} values are NaN or infinite"
    close = lambda x, y: bool(np.allclose(x, y, rtol=RTOL, atol=ATOL))   # noqa: E731
    if close(a, -b):
        return "every value has the wrong sign"
    if close(a, 0) and not close(b, 0):
        return "every value is 0"
    nonzero = np.abs(b) > ATOL
    if nonzero.any():
        ratio = a[nonzero] / b[nonzero]
        if np.allclose(ratio, ratio.flat[0], rtol=1e-6) and close(a[~nonzero], 0):
            return f"every value is {float(ratio.flat[0]):.3g} times the expected one"
    offset = a - b
    if np.allclose(offset, offset.flat[0], rtol=1e-6, atol=ATOL):
        return f"every value is off by the same amount ({float(offset.flat[0]):+.3g})"
    if a.ndim == 4:
        for axis, name in ((1, "channel"), (0, "image")):
            bad = [i for i in range(a.shape[axis]) if not close(np.take(a, i, axis), np.take(b, i, axis))]
            if len(bad) == 1 and a.shape[axis] > 1:
                return f"only {name} {bad[0]} of {a.shape[axis]} is wrong"
    wrong = ~np.isclose(a, b, rtol=RTOL, atol=ATOL)
    where = np.unravel_index(int(np.argmax(np.abs(offset))), a.shape) if a.ndim else ()
    return (f"{int(wrong.sum())} of {a.size} values differ, the largest at index {tuple(int(i) for i in where)}"
            if a.ndim else "the value differs")


def split_points(reference: dict, max_points: float) -> list:
    """[(concept, record names, points)] of a cell: its records grouped by concept; a check that
    names its points keeps them, the rest of the cell's points are split evenly over the others."""
    groups = {}
    for name, rec in reference.items():
        concept = rec.concept or name
        names, points = groups.get(concept, ((), None))
        groups[concept] = (names + (name,), points if points is not None else rec.points)
    named = sum(points for _, points in groups.values() if points is not None)
    unnamed = [concept for concept, (_, points) in groups.items() if points is None]
    share = max(0.0, max_points - named) / len(unnamed) if unnamed else 0.0
    return [(concept, names, share if points is None else points) for concept, (names, points) in groups.items()]


def score_cell(cell, max_points: float, reference: dict) -> CellScore:
    """A graded cell's points: each check earns its share when all its records match; an error that
    stopped the cell costs the checks that did not record. A cell whose reference records nothing
    is all or nothing on its error (nbgrader's rule)."""
    if cell is None:
        return CellScore(0.0, max_points, reasons=("cell missing",))
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return CellScore(0.0, max_points, reasons=("not run: the kernel stopped before this cell",))
    error = first_error(cell)
    printed = decode_records(stdout_text(cell))
    reasons = [error_summary(error)] if error is not None else []
    checks = []
    for concept, names, points in split_points(reference, max_points):
        missing = any(name not in printed for name in names)
        earned = points if all(record_matches(reference[n], printed.get(n)) for n in names) else 0.0
        wrong = [n for n in names if n in printed and not record_matches(reference[n], printed[n])]
        how = how_it_differs(printed[wrong[0]], reference[wrong[0]]) if wrong and not earned else ""
        checks.append(CheckResult(concept, points, earned, names, missing, how))
        if earned != points and not (missing and error is not None):
            reasons.append(f"{concept} (no result was recorded)" if missing else concept)
    if not checks:
        earned = 0.0 if error is not None else max_points
    else:
        earned = max_points if all(c.passed for c in checks) else round(sum(c.earned for c in checks), 2)
    return CellScore(earned, max_points, tuple(checks), tuple(dict.fromkeys(reasons)), printed)


def grade_cells(executed, graded: list, reference: dict) -> dict:
    "{grade_id: CellScore} of every graded cell; `graded` is [(grade_id, points)] of the source notebook."
    cells = {grade_id(c): c for c in executed.cells if is_graded(c) and c.cell_type == "code" and grade_id(c)}
    return {gid: score_cell(cells.get(gid), max_points, reference.get(gid, {})) for gid, max_points in graded}


def points_and_reasons(scores: dict) -> tuple:
    "(points by grade id, {grade_id: [reasons]} of the cells that lost points or raised) of grade_cells' scores."
    return ({gid: score.points for gid, score in scores.items()},
            {gid: list(score.reasons) for gid, score in scores.items() if score.reasons})


def score_cells(executed, graded: list, reference: dict) -> tuple:
    "points_and_reasons of an executed notebook."
    return points_and_reasons(grade_cells(executed, graded, reference))
