"""`tito release`: the student version holds no secret, is deterministic, and still exports with
nbdev into a package whose stubs raise NotImplementedError only when called."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from tito.commands.course import nbdev_export
from tito.grading.notebooks import HIDDEN, SOLUTION, cell_text, nbgrader_meta
from tito.grading.release import LeakError, alembic_head, generate, leak_report, scan_release, prepare_nbgrader
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
MODULE, NOTEBOOK = "09_spatial", "09_spatial.ipynb"
SOURCE = ROOT / "source" / MODULE / NOTEBOOK
RELEASE = ROOT / "release" / MODULE / NOTEBOOK


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory):
    "release/ generated now from the committed source/, in a scratch course folder."
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "settings.ini", course / "settings.ini")
    shutil.copytree(ROOT / "source" / MODULE, course / "source" / MODULE)
    generate(course, MODULE, load_settings(ROOT))
    return course


def test_committed_release_is_what_release_writes_now(fresh_release):
    fresh = (fresh_release / "release" / MODULE / NOTEBOOK).read_bytes()
    assert fresh == RELEASE.read_bytes(), "release/ is stale: run `tito release` and commit it"
    again = fresh_release / "again"
    again.mkdir()
    shutil.copy(ROOT / "settings.ini", again / "settings.ini")
    shutil.copytree(ROOT / "source" / MODULE, again / "source" / MODULE)
    generate(again, MODULE, load_settings(ROOT))
    assert (again / "release" / MODULE / NOTEBOOK).read_bytes() == fresh, "two releases of one source differ"


def test_release_holds_no_solution_hidden_test_or_marker():
    source, release = nbformat.read(SOURCE, as_version=4), nbformat.read(RELEASE, as_version=4)
    assert leak_report(release, source) == []
    text = RELEASE.read_text(encoding="utf-8")
    for marker in (*SOLUTION, *HIDDEN, "BEGIN MARK SCHEME"):
        assert marker not in text
    answers = [c for c in release.cells if nbgrader_meta(c).get("solution")]
    code, written = [c for c in answers if c.cell_type == "code"], [c for c in answers if c.cell_type == "markdown"]
    assert code and all("raise NotImplementedError()" in cell_text(c) for c in code)
    assert len(written) == 3 and all(cell_text(c).strip() == "YOUR ANSWER HERE" for c in written)
    graded = [c for c in release.cells if nbgrader_meta(c).get("grade")]
    assert sum(nbgrader_meta(c)["points"] for c in graded if c.cell_type == "code") == 60      # autograded
    assert sum(nbgrader_meta(c)["points"] for c in written) == 6                                  # by a person


def test_leak_scan_fails_loudly_on_a_planted_solution_and_hidden_line(tmp_path):
    source = nbformat.read(SOURCE, as_version=4)
    solution_line = next(line.strip() for c in source.cells for line in _region(cell_text(c), SOLUTION)
                         if len(line.strip()) > 20)
    hidden_line = next(line.strip() for c in source.cells for line in _region(cell_text(c), HIDDEN)
                       if "record" in line or "_check(" in line)
    course = tmp_path / "course"
    shutil.copytree(ROOT / "source", course / "source")
    (course / "release" / MODULE).mkdir(parents=True)
    leaky = nbformat.read(RELEASE, as_version=4)
    leaky.cells[-1].source += "\n" + solution_line
    leaky.cells.append(nbformat.v4.new_code_cell(f"# {hidden_line}"))
    nbformat.write(leaky, course / "release" / MODULE / NOTEBOOK)
    with pytest.raises(LeakError) as caught:
        scan_release(course, MODULE, NOTEBOOK)
    assert f"solution line '{solution_line[:70]}'" in str(caught.value)
    assert f"hidden line '{hidden_line[:70]}'" in str(caught.value)


def _region(text: str, markers) -> list:
    inside, lines = False, []
    for line in text.splitlines():
        if markers[0] in line:
            inside = True
        elif markers[1] in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def test_released_notebook_exports_to_a_stubbed_package(tmp_path):
    project = tmp_path / "student_project"
    (project / "nbs").mkdir(parents=True)
    for name in ("pyproject.toml", "settings.ini"):
        shutil.copy(ROOT / name, project / name)
    for name in ("00_tensor.ipynb", "01_layers.ipynb", "02_optim.ipynb"):
        shutil.copy(ROOT / "nbs" / name, project / "nbs" / name)
    shutil.copy(RELEASE, project / "nbs" / NOTEBOOK)
    (project / "tinytorch").mkdir(parents=True)
    for name in ("__init__.py", "record.py"):
        shutil.copy(ROOT / "tinytorch" / name, project / "tinytorch" / name)
    nbdev_export(project)
    probe = textwrap.dedent("""
        import json, numpy as np
        import tinytorch.core.spatial as spatial
        report = {"file": spatial.__file__, "raised": {}, "worked": []}
        x = np.ones((1, 1, 4, 4))
        conv = spatial.Conv2d(1, 2, 3)                 # constructing needs no student code
        pool, bn = spatial.MaxPool2d(2), spatial.BatchNorm2d(1)
        report["worked"].append(list(conv.weight.data.shape))
        for name, call in [("conv2d_loops", lambda: spatial.conv2d_loops(x, np.ones((1, 1, 3, 3)))),
                           ("Conv2d", lambda: conv(x)), ("MaxPool2d", lambda: pool(x)),
                           ("avg_pool2d_loops", lambda: spatial.avg_pool2d_loops(x, 2)),
                           ("BatchNorm2d", lambda: bn(np.arange(16.0).reshape(1, 1, 4, 4)))]:
            try:
                call()
                report["raised"][name] = None
            except Exception as error:
                report["raised"][name] = type(error).__name__
        print(json.dumps(report))
    """)
    run = subprocess.run([sys.executable, "-c", probe], cwd=project, capture_output=True, text=True,
                         env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve() == (project / "tinytorch" / "core" / "spatial.py").resolve()
    assert report["worked"] == [[2, 1, 3, 3]]
    assert report["raised"] == {name: "NotImplementedError" for name in
                                ("conv2d_loops", "Conv2d", "MaxPool2d", "avg_pool2d_loops", "BatchNorm2d")}
    source = (project / "tinytorch" / "core" / "spatial.py").read_text()
    assert "BEGIN SOLUTION" not in source and "raise NotImplementedError()" in source


def test_the_gradebook_schema_revision_read_from_nbgrader_files_is_the_one_alembic_reports(tmp_path):
    "prepare_nbgrader() swaps nbgrader's `alembic heads` subprocess (~2.5 s per new gradebook) for alembic_head()."
    from nbgrader.dbutil import _temp_alembic_ini
    import nbgrader.api
    prepare_nbgrader()
    with _temp_alembic_ini(f"sqlite:///{tmp_path / 'gradebook.db'}") as ini:
        heads = subprocess.check_output([str(Path(sys.executable).parent / "alembic"), "-c", ini, "heads"], text=True)
    assert alembic_head() == heads.split()[0]
    assert nbgrader.api.get_alembic_version is alembic_head
    gradebook = nbgrader.api.Gradebook(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert gradebook.db.execute(nbgrader.api.text("SELECT version_num FROM alembic_version")).scalar() == heads.split()[0]
    finally:
        gradebook.close()
