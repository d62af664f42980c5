"""`tito release`: source/<module>/ -> release/<module>/ with nbgrader's generate_assignment
(run in-process through its API), then a scan that fails loudly if any solution line, hidden
test line or mark-scheme text reached the student version."""
import filecmp
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from tito.grading.notebooks import MARKER_WORDS, cell_text, secret_lines
from tito.settings import load_settings


class LeakError(RuntimeError):
    "Secret text (solution, hidden test, mark scheme) found where students can read it."


def nbgrader_config(course: Path, settings):
    "The nbgrader configuration of a course folder (the same values nbgrader_config.py sets)."
    from traitlets.config import Config
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.course_id = settings.course_id
    config.CourseDirectory.db_url = f"sqlite:///{Path(course).resolve() / 'gradebook.db'}"
    config.Execute.timeout = settings.cell_timeout
    config.Execute.raise_on_iopub_timeout = False
    config.Execute.interrupt_on_timeout = True
    # Only the notebook is the assignment (no checkpoints, caches or stray files).
    config.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
    config.ClearSolutions.enforce_metadata = True
    return config


def prepare_nbgrader() -> None:
    """Prepare nbgrader to create gradebooks. It runs the `alembic` program (found beside our Python)
    only to learn the newest revision of its own database schema, a constant of its version, and
    that costs ~2.5 s per new gradebook: read it from the migration files instead."""
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    import nbgrader.api
    if alembic_head() is not None:
        nbgrader.api.get_alembic_version = alembic_head


@functools.lru_cache(maxsize=1)
def alembic_head():
    """The head revision of nbgrader's alembic migrations: the one revision no other revises.
    None when the files do not say it plainly (nbgrader then asks alembic, as it always did)."""
    import nbgrader
    revisions, parents = set(), set()
    for script in (Path(nbgrader.__file__).parent / "alembic" / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revision = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        parent = re.search(r"^down_revision\s*=\s*(?:['\"](\w+)['\"]|None)", text, re.M)
        if not revision or not parent:
            return None
        revisions.add(revision.group(1))
        if parent.group(1):
            parents.add(parent.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def generate(course: Path, module: str, settings) -> Path:
    "Run nbgrader generate_assignment for `module` in `course`; returns release/<module>."
    from nbgrader.apps import NbGraderAPI
    prepare_nbgrader()
    course = Path(course).resolve()
    if not (course / "source" / module).is_dir():
        raise FileNotFoundError(f"{course / 'source' / module} not found: run `tito export` first")
    api = NbGraderAPI(config=nbgrader_config(course, settings))
    result = api.generate_assignment(module, force=True, create=True)
    if not result.get("success"):
        raise RuntimeError(f"nbgrader generate_assignment {module} failed:\n{result.get('error') or result.get('log')}")
    released = course / "release" / module
    for notebook in released.glob("*.ipynb"):
        _normalise(notebook)
    return released


def _normalise(path: Path) -> None:
    "Write the released notebook in one canonical form, so `tito check` can compare it byte for byte."
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def leak_report(released_nb, source_nb) -> list:
    "Descriptions of secret text of `source_nb` found in `released_nb` (empty when clean)."
    secrets = secret_lines(source_nb)
    problems = []
    for index, cell in enumerate(released_nb.cells):
        texts = [cell_text(cell)]
        for output in cell.get("outputs", []):
            texts.append(json.dumps(output))
        text = "\n".join(texts)
        for word in MARKER_WORDS:
            if word in text:
                problems.append(f"cell {index}: marker '{word}'")
        for kind, lines in secrets.items():
            for line in lines:
                if line in text:
                    problems.append(f"cell {index}: {kind} line '{line[:70]}'")
    return problems


def scan_release(course: Path, module: str, notebook: str) -> None:
    source = nbformat.read(Path(course) / "source" / module / notebook, as_version=4)
    released_dir = Path(course) / "release" / module
    problems = []
    for path in sorted(released_dir.rglob("*")):
        if path.suffix == ".ipynb":
            problems += [f"{path.name}: {p}" for p in leak_report(nbformat.read(path, as_version=4), source)]
        elif path.is_file():
            fake = nbformat.v4.new_notebook(cells=[nbformat.v4.new_raw_cell(path.read_text(errors="replace"))])
            problems += [f"{path.name}: {p}" for p in leak_report(fake, source)]
    if problems:
        raise LeakError(f"secret text in {released_dir}:\n  " + "\n  ".join(problems[:40]))


def release(root: Path) -> list:
    "Generate and scan every module's student version in the project `root`; returns the released notebooks."
    settings = load_settings(root)
    written = []
    for module in settings.modules:
        generate(root, module, settings)
        scan_release(root, module, settings.notebook(module))
        written.append(Path(root) / "release" / module / settings.notebook(module))
    return written


def stale_release_files(root: Path) -> list:
    "release/ files that differ from what `tito release` would write from the committed source/."
    root = Path(root)
    settings = load_settings(root)
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        course = Path(scratch)
        shutil.copy(root / "settings.ini", course / "settings.ini")
        for module in settings.modules:
            if not (root / "source" / module).is_dir():
                continue  # reported by the source check
            shutil.copytree(root / "source" / module, course / "source" / module)
            generate(course, module, settings)
            fresh_dir = course / "release" / module
            fresh_files = {p.relative_to(fresh_dir) for p in fresh_dir.rglob("*") if p.is_file()}
            committed_dir = root / "release" / module
            committed_files = {p.relative_to(committed_dir) for p in committed_dir.rglob("*") if p.is_file()} \
                if committed_dir.is_dir() else set()
            for name in sorted(fresh_files | committed_files):
                fresh, committed = fresh_dir / name, committed_dir / name
                if not fresh.exists() or not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                    stale.append(committed.relative_to(root))
    return stale
