"""Per-cell scores of an executed notebook, decided in the grader's own process.

A graded cell earns its points iff (nbgrader's rule) it shows no error output — stderr is not
an error: an honest warning costs nothing — AND every record the reference solution printed in
that cell was printed by the submission in that same cell, with the same shape and values
(np.allclose, rtol=1e-5, atol=1e-6). The student's process never decides anything."""
import re

import numpy as np

from tinytorch.grading.notebooks import grade_id, is_graded
from tinytorch.grading.record import MARKER, decode_records

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


def error_summary(error) -> str:
    name = short(error.get("ename", "Error"), 60)
    value = CELL_FILE.sub(r"(line \1)", str(error.get("evalue", ""))).strip().splitlines()
    # Record marker lines are protocol data, never a message.
    value = [line for line in value if MARKER not in line]
    if not value or not value[0].strip():
        return name
    # A failing check's message is its concept in a student's words: show it alone.
    return short(value[0]) if name == "AssertionError" else f"{name}: {short(value[0])}"


def reference_records_of(executed) -> dict:
    "{grade_id: {name: (array, concept)}} printed by the graded cells of an executed notebook."
    return {grade_id(c): decode_records(stdout_text(c)) for c in executed.cells
            if is_graded(c) and c.cell_type == "code" and grade_id(c)}


def compare_records(expected: dict, printed: dict) -> tuple:
    "(wrong concepts, missing concepts) of the records in `expected` against `printed`."
    wrong, missing = [], []
    for name, (reference, concept) in expected.items():
        if name not in printed:
            missing.append(concept or name)
            continue
        value = printed[name][0]
        if value.shape != reference.shape or not np.allclose(value, reference, rtol=RTOL, atol=ATOL):
            wrong.append(concept or name)
    return wrong, missing


def score_cells(executed, graded: list, reference: dict) -> tuple:
    """Score every graded cell. `graded` is [(grade_id, points)] of the source notebook.
    Returns (points by grade id, {grade_id: [reasons]} of the failing cells)."""
    cells = {grade_id(c): c for c in executed.cells if is_graded(c) and c.cell_type == "code" and grade_id(c)}
    points, messages = {}, {}
    for gid, max_points in graded:
        cell = cells.get(gid)
        if cell is None:
            points[gid], messages[gid] = 0.0, ["cell missing"]
            continue
        if cell.get("execution_count") is None and not cell.get("outputs"):
            points[gid], messages[gid] = 0.0, ["not run: the kernel stopped before this cell"]
            continue
        error = first_error(cell)
        wrong, missing = compare_records(reference.get(gid, {}), decode_records(stdout_text(cell)))
        reasons = []
        if error is not None:
            reasons.append(error_summary(error))
        reasons.extend(wrong)
        if error is None:
            reasons.extend(f"{concept} (no result was recorded)" for concept in missing)
        unique = list(dict.fromkeys(reasons))
        points[gid] = 0.0 if unique else max_points
        if unique:
            messages[gid] = unique
    return points, messages

