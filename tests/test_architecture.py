"""Imports go one way (docs/architecture.md): the library a student imports never reaches the
course tooling, the grading stages never reach the command line or the web service, and the
student runtime the grading kernel imports holds only the files it lists. A test, so that an
import against the grain fails here instead of in a student's kernel."""
import ast
from pathlib import Path

from tinytorch.grading.sandbox import STUDENT_RUNTIME_FILES

PACKAGE = Path(__file__).resolve().parents[1] / "tinytorch"
# layer -> the layers it may import (besides itself and the standard library / third-party packages)
ALLOWED = {
    "library": {"library"},                              # tinytorch.core.*, tinytorch.data, tinytorch.checks
    "grading": {"library", "grading", "support"},        # tinytorch.grading.*
    "support": {"library", "support", "grading"},        # settings, paths, student (tito's student side)
    "serve": {"library", "grading", "support", "serve"},
    "commands": {"library", "grading", "support", "serve", "commands"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["tinytorch", "core"] or module in ("tinytorch", "tinytorch.data", "tinytorch.checks",
                                                         "tinytorch.grading", "tinytorch.grading.record"):
        return "library"   # what a student imports: the layers, the data, the checks and the record protocol
    if parts[:2] == ["tinytorch", "grading"]:
        return "grading"
    if parts[:2] == ["tinytorch", "serve"]:
        return "serve"
    if parts[:2] == ["tinytorch", "commands"] or module == "tinytorch.cli":
        return "commands"
    return "support"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


def imported(path: Path) -> set:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "tinytorch" or name.startswith("tinytorch.")}


def test_no_import_against_the_grain():
    wrong = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
             for name, path in modules() if name != "tinytorch._modidx"
             for target in imported(path) if layer(target) not in ALLOWED[layer(name)]]
    assert not wrong, "imports against the grain (see docs/architecture.md):\n  " + "\n  ".join(wrong)


def test_the_student_runtime_imports_only_what_it_ships():
    shipped = {".".join(Path("tinytorch", f).with_suffix("").parts).removesuffix(".__init__")
               for f in STUDENT_RUNTIME_FILES}
    for relative in STUDENT_RUNTIME_FILES:
        outside = {t for t in imported(PACKAGE / relative) if t not in shipped}
        assert not outside, f"{relative} imports {sorted(outside)}, which the grading kernel does not have"


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [name for name, _ in modules() if name.startswith(("tinytorch.grading.", "tinytorch.serve."))
               and name.rsplit(".", 1)[-1] not in page]
    assert not missing, f"docs/architecture.md does not say where these sit: {missing}"
