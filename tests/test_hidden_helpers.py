"""Hidden reference helpers: defined once in nbs/, written by `tito export` into every graded cell of
source/ that uses them (`### HIDDEN HELPER _name`), so that each graded cell the grader runs stands
alone: restored after a student deleted it, run before the cell that defines the helper in nbs/, or
re-run in a new kernel after a crash, where a timed-out or crashed cell is not re-run."""
import ast
import contextlib
import io
import json
from pathlib import Path

import pytest

from tinytorch.record import decode_records
from tito.grading.notebooks import HIDDEN, HelperError, cell_text, expand_hidden_helpers, grade_id, is_demo, is_graded

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs" / "09_spatial.ipynb"
SOURCE = ROOT / "source" / "09_spatial" / "09_spatial.ipynb"
HELPERS = ("_reference_pool", "_reference_conv2d")


def code(text: str, gid: str | None = None, graded: bool = True) -> dict:
    meta = {"nbgrader": {"grade": graded, "grade_id": gid, "locked": True, "points": 1, "schema_version": 3,
                         "solution": False, "task": False}} if gid else {}
    lines = text.split("\n")
    return {"cell_type": "code", "metadata": meta, "outputs": [], "execution_count": None,
            "source": [line + "\n" for line in lines[:-1]] + lines[-1:]}


def notebook(*cells) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)}


DEFINES = code("x = 1\n### BEGIN HIDDEN TESTS\ndef _ref(a):\n    return a + 1\n\nprint(_ref(x))\n"
               "### END HIDDEN TESTS\nchecks_passed()", "first")
USES = code("y = 2\n### BEGIN HIDDEN TESTS\n### HIDDEN HELPER _ref (defined earlier)\n\nprint(_ref(y))\n"
            "### END HIDDEN TESTS\nchecks_passed()", "second")


def test_a_helper_line_becomes_the_one_definition():
    nb = notebook(DEFINES, code("print('not graded')"), USES)
    expanded = expand_hidden_helpers(nb)
    assert cell_text(expanded["cells"][2]) == ("y = 2\n### BEGIN HIDDEN TESTS\ndef _ref(a):\n    return a + 1\n\n"
                                               "print(_ref(y))\n### END HIDDEN TESTS\nchecks_passed()")
    assert expanded["cells"][:2] == nb["cells"][:2]
    assert expand_hidden_helpers(notebook(DEFINES)) == notebook(DEFINES), "nothing to expand: the notebook as it was"


@pytest.mark.parametrize("cells, words", [
    # visible text of a graded cell: the reference would be released
    ((DEFINES, code("### HIDDEN HELPER _ref\nprint(_ref(2))", "second")), "must stand inside the hidden tests"),
    ((DEFINES, code("### BEGIN HIDDEN TESTS\n### HIDDEN HELPER _ref\n### END HIDDEN TESTS")), "inside the hidden tests"),
    ((USES,), "found 0 definitions"),
    ((DEFINES, code(cell_text(DEFINES), "again"), USES), "found 2 definitions"),
    ((USES, DEFINES), "must stand in an earlier cell"),
    ((DEFINES, code("### BEGIN HIDDEN TESTS\nif True:\n    ### HIDDEN HELPER _ref\n    pass\n### END HIDDEN TESTS", "second")),
     "must start its line"),
])
def test_a_helper_line_that_cannot_be_expanded_is_refused_with_its_reason(cells, words):
    with pytest.raises(HelperError, match=words):
        expand_hidden_helpers(notebook(*cells), "toy.ipynb")


def hidden_defs(nb: dict) -> list:
    "Names of the top-level functions defined in the hidden parts of nb's graded cells, one per definition."
    names = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and is_graded(cell):
            text = cell_text(cell)
            while HIDDEN[0] in text:
                hidden, _, text = text.partition(HIDDEN[0])[2].partition(HIDDEN[1])
                names += [n.name for n in ast.parse(hidden).body if isinstance(n, ast.FunctionDef)]
    return names


def test_nbs_defines_each_hidden_helper_once_and_source_in_every_cell_that_uses_it():
    nbs, source = json.loads(NBS.read_text()), json.loads(SOURCE.read_text())
    in_nbs, in_source = hidden_defs(nbs), hidden_defs(source)
    assert sorted(set(in_nbs)) == sorted(in_nbs), f"a hidden helper defined twice in nbs/: {in_nbs}"
    assert {"_reference_pool": 3, "_reference_conv2d": 2} == {h: in_source.count(h) for h in HELPERS}
    assert source == expand_hidden_helpers(nbs), "source/ is nbs/ with its helpers expanded: run `tito export`"


def bound_names(tree) -> set:
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names | {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}


def test_every_graded_cell_of_source_defines_the_private_names_it_uses():
    for cell in json.loads(SOURCE.read_text())["cells"]:
        if cell["cell_type"] == "code" and is_graded(cell):
            tree = ast.parse(cell_text(cell))
            used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                    and n.id.startswith("_")}
            assert not used - bound_names(tree), f"{grade_id(cell)} uses {sorted(used - bound_names(tree))} from elsewhere"


def test_each_graded_cell_of_source_grades_without_the_other_graded_cells():
    """Run source/ in-process with the solutions, every graded cell in a copy of the state the cells
    before it built WITHOUT any graded cell (as if each earlier test cell had been deleted, or timed
    out before a restart): each still records its checks and none fails."""
    import matplotlib
    matplotlib.use("Agg")
    namespace = {"__name__": "__main__"}
    graded = 0
    for cell in json.loads(SOURCE.read_text())["cells"]:
        if cell["cell_type"] != "code" or is_demo(cell):
            continue
        text = "\n".join(line for line in cell_text(cell).splitlines() if not line.startswith("#|"))
        if not is_graded(cell):
            exec(compile(text, "<cell>", "exec"), namespace)
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(text, grade_id(cell), "exec"), dict(namespace))
        assert decode_records(printed.getvalue()), f"{grade_id(cell)} recorded nothing"
        graded += 1
    assert graded == 9
