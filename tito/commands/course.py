"""`tito export` and `tito check`: build the package and the nbgrader source from `nbs/`,
and fail when what is committed is stale."""
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tito.grading.notebooks import HelperError, expand_hidden_helpers
from tito.paths import project_root
from tito.settings import load_settings

def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="nbs/ -> tinytorch/ (nbdev) and nbs/ -> source/; "
                                   "in a student folder: your notebook -> your own ./tinytorch")
    export.set_defaults(handler=run_export)
    check = subparsers.add_parser("check", help="fail, naming the file, when tinytorch/, source/ or release/ is stale")
    check.set_defaults(handler=run_check)


def _nbdev(tool: str, root: Path) -> None:
    "Run an nbdev command in `root` (a separate process: nbdev reads its config from the working folder)."
    executable = Path(sys.executable).with_name(tool)
    if not executable.exists():
        raise FileNotFoundError(f"{executable} not found: install the course tools with pip install -e '.[course]'")
    result = subprocess.run([str(executable)], cwd=root, capture_output=True, text=True)
    if result.returncode != 0 or "Traceback" in result.stderr:
        raise RuntimeError(f"{tool} failed in {root}:\n{result.stdout}{result.stderr}")


def nbdev_export(root: Path) -> None:
    "Clean the notebooks (nbdev-clean), then export them (nbdev-export): the copy in source/ is then the clean one."
    _nbdev("nbdev-clean", root)
    _nbdev("nbdev-export", root)


def write_source(origin: Path, target: Path) -> None:
    "source/'s notebook from nbs/'s: hidden helpers expanded, in nbdev-clean's JSON layout."
    nb = json.loads(origin.read_text(encoding="utf-8"))
    expanded = expand_hidden_helpers(nb, str(origin.name))
    if expanded == nb:
        shutil.copyfile(origin, target)
        return
    target.write_text(json.dumps(expanded, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def export_sources(root: Path) -> list:
    """Write each graded module's notebook from nbs/ to source/<module>/ (a copy, with its
    `### HIDDEN HELPER` lines expanded); returns the written paths."""
    settings = load_settings(root)
    written = []
    for module in settings.modules:
        notebook = settings.notebook(module)
        origin = root / "nbs" / notebook
        if not origin.exists():
            raise FileNotFoundError(f"settings.ini lists module {module}, but {origin} does not exist")
        target = root / "source" / module / notebook
        target.parent.mkdir(parents=True, exist_ok=True)
        write_source(origin, target)
        written.append(target)
    return written


def run_export(args) -> int:
    from tito.student import find_student_folder, why_no_module_notebook
    student = find_student_folder()
    if student is not None:
        return run_student_export(student)
    try:
        root = project_root()
    except FileNotFoundError as error:
        print(f"tito export: neither a course folder ({error}) nor a student folder "
              f"({why_no_module_notebook(Path.cwd())})", file=sys.stderr)
        return 1
    nbdev_export(root)
    try:
        written = export_sources(root)
    except HelperError as error:
        print(f"tito export: {error}", file=sys.stderr)
        return 1
    print(f"exported nbs/ -> tinytorch/ and {', '.join(str(p.relative_to(root)) for p in written)}")
    return 0


def run_student_export(folder: Path) -> int:
    "`tito export` in a student folder: the student's notebooks -> their own ./tinytorch (see tito.student)."
    from tito.student import StudentError, student_export
    try:
        result = student_export(folder)
    except StudentError as error:
        print(f"tito export: {error}", file=sys.stderr)
        return 1
    print(f"exported your notebook(s) -> {', '.join(str(p) for p in result.own)} "
          f"(with the course's {', '.join(p.stem for p in result.copied) or 'nothing else'})")
    print(f"Python started in {folder} now imports your code: {result.imported_from}")
    return 0


def stale_files(root: Path) -> list:
    "Generated files that differ from what `tito export` would write now (missing ones included)."
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "project"
        copy.mkdir()
        for name in ("pyproject.toml", "settings.ini"):
            shutil.copy(root / name, copy / name)
        shutil.copytree(root / "nbs", copy / "nbs")
        shutil.copytree(root / "tinytorch", copy / "tinytorch",
                        ignore=shutil.ignore_patterns("__pycache__"))
        nbdev_export(copy)
        export_sources(copy)
        fresh_files = (sorted((copy / "nbs").glob("*.ipynb")) + sorted((copy / "tinytorch").rglob("*.py"))
                       + sorted((copy / "source").rglob("*.ipynb")))
        for fresh in fresh_files:
            committed = root / fresh.relative_to(copy)
            if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                stale.append(committed.relative_to(root))
    from tito.grading.release import stale_release_files
    stale.extend(stale_release_files(root))
    return stale


def run_check(args) -> int:
    root = project_root()
    try:
        stale = stale_files(root)
    except HelperError as error:
        print(f"tito check: {error}", file=sys.stderr)
        return 1
    if stale:
        print("stale or uncleaned files (edit nbs/, then run `tito export` and `tito release`):", file=sys.stderr)
        for path in stale:
            print(f"  {path}", file=sys.stderr)
        return 1
    print("tinytorch/, source/ and release/ are up to date with nbs/")
    return 0
