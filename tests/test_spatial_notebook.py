"""The Module 09 notebook as an assignment: graded cells, points, hidden parts and records; solution
regions only inside function bodies, so that the released (stubbed) notebook still exports with
nbdev, imports, and raises NotImplementedError only when a stub is called."""
import ast
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinytorch.record import decode_records

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "09_spatial.ipynb"
STUBBED = ["conv2d_loops", "max_pool2d_loops", "avg_pool2d_loops", "batch_norm2d_loops"]


def cells():
    return [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def graded():
    return [c for c in cells() if nbgrader(c).get("grade")]


def test_points_and_metadata():
    cells_graded = graded()
    ids = [nbgrader(c)["grade_id"] for c in cells() if nbgrader(c)]
    assert len(ids) == len(set(ids)), f"grade_ids must be unique: {ids}"
    assert sum(nbgrader(c)["points"] for c in cells_graded) == 60
    assert len(cells_graded) >= 8, "points spread over Conv2d, pooling, BatchNorm, SimpleCNN and integration"
    for cell in cells_graded:
        meta = nbgrader(cell)
        assert meta["locked"] and not meta["solution"] and meta["schema_version"] == 3, meta
    for cell in cells():
        if "### BEGIN SOLUTION" in source(cell):
            meta = nbgrader(cell)
            assert meta.get("solution") and not meta.get("grade") and not meta.get("locked"), meta


def test_every_graded_cell_has_visible_and_hidden_checks_that_record_under_its_name():
    for cell in graded():
        grade_id, text = nbgrader(cell)["grade_id"], source(cell)
        visible, _, rest = text.partition("### BEGIN HIDDEN TESTS")
        hidden, _, after = rest.partition("### END HIDDEN TESTS")
        assert hidden and after.strip() == "checks_passed()", \
            f"{grade_id}: one hidden part, then checks_passed() (it raises what failed, for visible and hidden checks alike)"
        visible_names = re.findall(r'\bcheck\(\s*f?"([^"]+)"', visible)
        assert visible_names, f"{grade_id}: the visible part must check something students can run"
        names = re.findall(r'\b(?:hidden_check|check)\(\s*f?"([^"]+)"', hidden)
        assert names, f"{grade_id}: the hidden part records nothing"
        wrong = [n for n in visible_names + names if not n.startswith(grade_id + ":")]
        assert not wrong, f"{grade_id}: check names must start with '{grade_id}:', got {wrong}"
        assert "assert " not in hidden, f"{grade_id}: a plain assert in a hidden part records nothing: use a check"


def test_solution_regions_are_loop_bodies_inside_the_stubbed_functions():
    found = set()
    for cell in cells():
        text = source(cell)
        if "### BEGIN SOLUTION" not in text:
            continue
        tree = ast.parse("\n".join(l for l in text.splitlines() if not l.startswith("#|")))
        function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
        found.add(function.name)
        lines = text.splitlines()
        begin = next(i for i, l in enumerate(lines) if "### BEGIN SOLUTION" in l)
        end = next(i for i, l in enumerate(lines) if "### END SOLUTION" in l)
        assert lines[begin].startswith("    ") and lines[end].startswith("    "), \
            f"{function.name}: the solution region must sit inside the function body"
        before = "\n".join(lines[:begin])
        kept = ["check_input(", "out = np."] + (["output_size("] if "pool" in function.name or "conv" in function.name else [])
        for line in kept:   # shape checks, output sizes and the allocation stay outside the region
            assert line in before, f"{function.name}: the student keeps {line!r} outside the solution region"
    assert found == set(STUBBED)


def test_reference_records_are_small_and_named(tmp_path):
    "Run the notebook's code cells in-process (as the mutation harness does) and decode every record."
    import matplotlib
    matplotlib.use("Agg")
    namespace = {"__name__": "__main__"}
    records = {}
    for cell in cells():
        text = "\n".join(l for l in source(cell).splitlines() if not l.startswith("#|"))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(text, "<cell>", "exec"), namespace)
        found = decode_records(printed.getvalue())
        if nbgrader(cell).get("grade"):
            prefix = nbgrader(cell)["grade_id"] + ":"
            assert found and all(name.startswith(prefix) for name in found), (prefix, sorted(found))
        assert not (set(found) & set(records)), f"record names repeat: {set(found) & set(records)}"
        records.update(found)
    assert len(records) >= 60
    large = {name: rec.value.size for name, rec in records.items() if rec.value.size >= 2000}
    assert not large, f"records must stay small: {large}"
    assert all(np.isfinite(rec.value).all() for rec in records.values())
    assert all(len(rec.concept) > 20 for rec in records.values()), "every record explains its concept"
    assert not [name for name, rec in records.items() if rec.repeated], "every record name is printed once"
    import matplotlib.pyplot as plt
    plt.close("all")


def test_released_notebook_exports_imports_and_stubs_raise_only_when_called(tmp_path):
    nbgrader_pre = pytest.importorskip("nbgrader.preprocessors")
    import nbformat
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for preprocessor in (nbgrader_pre.ClearSolutions(), nbgrader_pre.ClearHiddenTests()):
        notebook, _ = preprocessor.preprocess(notebook, {})
    text = "\n".join(cell.source for cell in notebook.cells)
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN" not in text
    assert "out_h * stride_h + k_h" not in text.split("def conv2d_backward")[0], "the conv loop leaked"
    for name in ("pyproject.toml", "settings.ini"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "tinytorch", tmp_path / "tinytorch", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "nbs").mkdir()
    nbformat.write(notebook, tmp_path / "nbs" / "09_spatial.ipynb")
    export = subprocess.run([str(Path(sys.executable).with_name("nbdev-export"))], cwd=tmp_path,
                            capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    check = f"""
import numpy as np
from tinytorch.core import spatial
assert spatial.__file__.startswith({str(tmp_path)!r}), spatial.__file__
model = spatial.SimpleCNN()
assert model.num_parameters() == 25578
for name, call in [("conv2d_loops", lambda: spatial.conv2d_loops(np.zeros((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))),
                   ("max_pool2d_loops", lambda: spatial.max_pool2d_loops(np.zeros((1, 1, 2, 2)), 2)),
                   ("avg_pool2d_loops", lambda: spatial.avg_pool2d_loops(np.zeros((1, 1, 2, 2)), 2)),
                   ("batch_norm2d_loops", lambda: spatial.batch_norm2d_loops(np.zeros((2, 1, 2, 2)), np.ones(1), np.zeros(1),
                                                                            np.zeros(1), np.ones(1), True)),
                   ("SimpleCNN.forward", lambda: model(np.zeros((1, 3, 32, 32))))]:
    try:
        call()
    except NotImplementedError:
        continue
    raise AssertionError(name + " should raise NotImplementedError in the released package")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
