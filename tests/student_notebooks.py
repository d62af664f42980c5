"""Notebooks a student would have, for the student-workflow and browser tests: the released
notebook (stubs), the same notebook filled in with the reference solution, and a broken one."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = "09_spatial"
SOURCE = ROOT / "source" / MODULE / f"{MODULE}.ipynb"
RELEASE = ROOT / "release" / MODULE / f"{MODULE}.ipynb"


def released_notebook() -> Path:
    "The student version: the committed release/ notebook (`tito check` keeps it up to date with nbs/)."
    assert RELEASE.exists(), f"{RELEASE} is missing: run `tito release`"
    return RELEASE


def _text(cell) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _solutions() -> dict:
    "grade_id -> the reference text of each solution cell, without the solution markers."
    source = json.loads(SOURCE.read_text(encoding="utf-8"))
    solutions = {}
    for cell in source["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            solutions[meta["grade_id"]] = "\n".join(
                line for line in _text(cell).splitlines()
                if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return solutions


def filled_in(released: Path, target: Path, edit=None) -> Path:
    """Write to `target` the released notebook with each solution cell filled in as the reference
    solution; `edit(grade_id, text) -> text` may change a solution (a student's bug)."""
    notebook = json.loads(Path(released).read_text(encoding="utf-8"))
    solutions = _solutions()
    for cell in notebook["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            text = solutions[meta["grade_id"]]
            cell["source"] = edit(meta["grade_id"], text) if edit else text
    Path(target).write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    return Path(target)


def max_pool_starts_at_zero(grade_id: str, text: str) -> str:
    "The classic bug: a running max that starts at 0 instead of -inf."
    if grade_id != "max_pool2d_loops_solution":
        return text
    broken = text.replace("best = -np.inf", "best = 0.0")
    assert broken != text, "the reference max-pool no longer starts with `best = -np.inf`; update this bug"
    return broken
