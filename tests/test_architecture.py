"""Imports go one way (docs/architecture.md): the library a student imports never reaches the
course tooling, the grading stages never reach the command line or the web service, and the
student runtime the grading kernel imports holds only the files it lists. A test, so that an
import against the grain fails here instead of in a student's kernel."""
import ast
from pathlib import Path

from tito.grading.sandbox import STUDENT_RUNTIME_FILES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinytorch"     # the library: what `import tinytorch` gives anyone, student or not
TOOLS = ROOT / "tito"            # the course tooling: command line, grading, serve, the student's side
# layer -> the layers it may import (besides itself and the standard library / third-party packages)
ALLOWED = {
    "library": {"library"},                              # tinytorch.*: core, data, checks, record
    "grading": {"library", "grading", "support"},        # tito.grading.*
    "support": {"library", "support", "grading"},        # tito.settings, .paths, .student (the student's side)
    "serve": {"library", "grading", "support", "serve"},
    "commands": {"library", "grading", "support", "serve", "commands"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "tinytorch":
        return "library"   # what a student imports: the layers, the data, the checks and the record protocol
    if parts[:2] == ["tito", "grading"]:
        return "grading"
    if parts[:2] == ["tito", "serve"]:
        return "serve"
    if parts[:2] == ["tito", "commands"] or module == "tito.cli":
        return "commands"
    return "support"


def modules():
    for package in (PACKAGE, TOOLS):
        for path in sorted(package.rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, path


def imported(path: Path) -> set:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("tinytorch", "tito")}


def test_no_import_against_the_grain():
    wrong = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
             for name, path in modules() if name != "tinytorch._modidx"
             for target in imported(path) if layer(target) not in ALLOWED[layer(name)]]
    assert not wrong, "imports against the grain (see docs/architecture.md):\n  " + "\n  ".join(wrong)


def test_the_library_notebooks_do_not_import_the_tooling():
    "nbs/ is the library's source: its notebooks (exported cells or not) import tinytorch, never tito."
    import json
    wrong = []
    for notebook in sorted((ROOT / "nbs").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                         else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                wrong += [f"{notebook.name} cell {cell.get('id')}: {name}" for name in names if name.split(".")[0] == "tito"]
    assert not wrong, "library notebooks importing the course tooling:\n  " + "\n  ".join(wrong)


def test_the_student_runtime_imports_only_what_it_ships():
    shipped = {".".join(Path("tinytorch", f).with_suffix("").parts).removesuffix(".__init__")
               for f in STUDENT_RUNTIME_FILES}
    for relative in STUDENT_RUNTIME_FILES:
        outside = {t for t in imported(PACKAGE / relative) if t not in shipped}
        assert not outside, f"{relative} imports {sorted(outside)}, which the grading kernel does not have"


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [name for name, _ in modules() if name.startswith(("tito.grading.", "tito.serve."))
               and name.rsplit(".", 1)[-1] not in page]
    assert not missing, f"docs/architecture.md does not say where these sit: {missing}"


# Every file of the library is either shipped to the grading kernel or kept from it, for a reason:
# the runtime is "the library without the solutions" by construction, and a new file must choose.
KEPT_FROM_THE_KERNEL = {
    "core/spatial.py": "the module's solutions (the student's own notebook defines these)",
    "core/im2col.py": "Module 17's fast path; the course's [policy] forbids it in graded loops",
    "core/training.py": "Milestone 3's training loop, built on the solutions",
    "data.py": "data sets (scikit-learn's digits, CIFAR-10 batches); no graded cell loads data",
    "_modidx.py": "nbdev's index of the library, for documentation links",
}


def test_every_library_file_is_shipped_to_the_kernel_or_kept_from_it_for_a_reason():
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    undecided = files - set(STUDENT_RUNTIME_FILES) - set(KEPT_FROM_THE_KERNEL)
    assert not undecided, f"add these to sandbox.STUDENT_RUNTIME_FILES or to KEPT_FROM_THE_KERNEL: {sorted(undecided)}"
    assert not set(STUDENT_RUNTIME_FILES) & set(KEPT_FROM_THE_KERNEL)
    assert not {f for f in STUDENT_RUNTIME_FILES if not (PACKAGE / f).exists()}, "the runtime lists a missing file"


# Inside grading, the dispatch of a class (a batch on this machine, or a Dask cluster) sits above
# the stages of one submission and the data they pass on: a stage never reaches back up to it.
DISPATCH = {"tito.grading.batch", "tito.grading.distributed"}


def test_the_stages_of_one_submission_never_import_the_class_dispatch():
    grading = [(name, path) for name, path in modules() if layer(name) == "grading"]
    assert DISPATCH <= {name for name, _ in grading}
    wrong = [f"{name} imports {target}" for name, path in grading if name not in DISPATCH
             for target in imported(path) if target in DISPATCH]
    assert not wrong, "a stage imports the class's dispatch (see docs/architecture.md):\n  " + "\n  ".join(wrong)


def test_the_pipeline_lists_its_stages_in_the_order_the_page_gives():
    from tito.grading.pipeline import STAGES
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    order = " → ".join(stage.__name__ for stage in STAGES)
    assert order == "read → restore → execute → score → write_report"
    assert order in page
