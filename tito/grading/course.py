"""What the course gives a batch before any student's notebook runs: the course folder nbgrader
accepts, the `Assignment` (source, release, graded and manual cells, secrets), the reference
records the checks compare with (cached by the source's hash), the misconception library, and the
kernel limits with the sandbox's note.
"""
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import nbformat

from tito.grading.intake import atomic_write
from tito.grading.model import Assignment, GradingError
from tito.grading.notebooks import (MARKER_WORDS, cell_text, content_hash, demo_cells, graded_cells, is_demo,
                                    manual_cells, nbgrader_meta, restore_cells, secret_lines)
from tito.grading.sandbox import KernelLimits, execute_notebook, sandbox_available
from tito.grading.scoring import grade_cells, reference_records_of, score_cells
from tinytorch.record import decode_records, encode_record


def prepare_course(out: Path, root: Path, module: str, settings) -> None:
    """Make `out` a course folder nbgrader accepts: source/ copied from the project and the
    assignment (notebooks, grade cells) recorded in out/gradebook.db."""
    from tito.grading.release import generate
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != root.resolve():
        target = out / "source" / module
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(root / "source" / module, target)
        for name in ("settings.ini", "nbgrader_config.py"):
            if (root / name).exists():
                shutil.copy(root / name, out / name)
        library = root / "misconceptions" / f"{module}.json"
        if library.exists():
            (out / "misconceptions").mkdir(exist_ok=True)
            shutil.copy(library, out / "misconceptions" / library.name)
    generate(out, module, settings)


def _visible_release(source):
    "The student version in memory (for telling edited test cells), when release/ is not at hand."
    from tito.grading.notebooks import HIDDEN, SOLUTION, strip_region
    nb = nbformat.from_dict(json.loads(json.dumps(source)))
    for cell in nb.cells:
        cell.source = strip_region(strip_region(cell_text(cell), *HIDDEN), *SOLUTION)
    return nb


def load_assignment(course: Path, module: str, notebook: str) -> Assignment:
    path = Path(course) / "source" / module / notebook
    if not path.exists():
        raise GradingError(f"{path} not found: run `tito export` (and `tito release`) first")
    data = path.read_bytes()
    source = nbformat.reads(data.decode("utf-8"), as_version=4)
    released_path = Path(course) / "release" / module / notebook
    release = nbformat.read(released_path, as_version=4) if released_path.exists() else _visible_release(source)
    graded = graded_cells(source)
    if not graded:
        raise GradingError(f"{path} has no graded cells (nbgrader metadata with grade: true)")
    ids = [gid for gid, _ in graded]
    if len(set(ids)) != len(ids):
        raise GradingError(f"{path}: duplicated grade ids in the source notebook")
    for index, cell in enumerate(source.cells):
        if is_demo(cell) and (nbgrader_meta(cell) or "#| export" in cell_text(cell) or
                              any(marker in cell_text(cell) for marker in MARKER_WORDS)):
            raise GradingError(f"{path}: cell {index + 1} is tagged demo (the grader skips it) but is also an "
                               "nbgrader, export or solution cell; a demo cell must grade and export nothing")
    return Assignment(module, notebook, source, release, content_hash(data), graded, secret_lines(source),
                      manual_cells(source))


def reference_records(assignment: Assignment, limits, state_dir: Path) -> dict:
    "{grade_id: {name: (array, concept)}} of the reference solution, cached by source hash."
    cache = Path(state_dir) / f"reference-{assignment.source_hash[:16]}.json"
    if cache.exists():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        return {gid: decode_records(text) for gid, text in stored.items()}
    result = _run_fresh(assignment.source, assignment, limits)
    points, messages = score_cells(result.notebook, assignment.graded, {})
    if result.status != "ok" or messages:
        raise GradingError(f"the reference solution in source/{assignment.module} does not pass its own tests "
                           f"({result.status} {result.detail}): {messages}")
    records = reference_records_of(result.notebook)
    repeated = [f"{gid}: {name}" for gid, recs in records.items() for name, rec in recs.items() if rec.repeated]
    if repeated:
        raise GradingError(f"the reference solution in source/{assignment.module} prints a record name twice "
                           f"(each check needs its own name): {', '.join(repeated[:5])}")
    records = _without_free_checks(records, assignment, limits)
    stored = {gid: "\n".join(encode_record(name, rec.value, rec.concept, rec.points) for name, rec in recs.items())
              for gid, recs in records.items()}
    atomic_write(cache, json.dumps(stored))
    return records


def _run_fresh(notebook, assignment: Assignment, limits):
    "Execute a copy of `notebook` with its outputs cleared, as the grader runs a submission."
    nb = nbformat.from_dict(json.loads(json.dumps(notebook)))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="tito-reference-") as workdir:
        os.chmod(workdir, 0o777)
        return execute_notebook(nb, Path(workdir), limits, skip=demo_cells(nb, assignment.source))


def _without_free_checks(records: dict, assignment: Assignment, limits) -> dict:
    """The reference records with the checks that the untouched release already passes worth 0
    points (they test the course's given code, not the student's work), so a notebook handed back
    unchanged scores 0. A cell whose every check passes untouched keeps its points as they are."""
    restored, _ = restore_cells(nbformat.from_dict(json.loads(json.dumps(assignment.release))),
                                assignment.source, assignment.release)
    untouched = grade_cells(_run_fresh(restored, assignment, limits).notebook, assignment.graded, records)
    kept = {}
    for gid, recs in records.items():
        free = {c.concept for c in untouched[gid].checks if c.passed} if gid in untouched else set()
        if free and len(free) < len(untouched[gid].checks):
            recs = {name: rec._replace(points=0.0) if (rec.concept or name) in free else rec for name, rec in recs.items()}
        kept[gid] = recs
    return kept


def load_misconceptions(assignment: Assignment, course: Path, state: Path) -> None:
    "The course's misconception library and what each variant prints (cached by the source's hash)."
    from tito.grading import misconceptions
    try:
        assignment.misconceptions = misconceptions.load(course, assignment.module)
        assignment.variants = misconceptions.cached_variant_records(assignment, assignment.misconceptions, state)
    except misconceptions.MisconceptionError as error:
        raise GradingError(str(error)) from None


def sandbox_note_for(limits) -> str:
    "The note every grade carries without the sandbox (\"sandbox off\"); GradingError when it is on but cannot run."
    if not limits.sandbox:
        return "sandbox off"
    available, why = sandbox_available()
    if not available:
        raise GradingError(f"the grading sandbox cannot run here ({why}); install bubblewrap "
                           f"(scripts/setup.sh) or pass --no-sandbox to grade without it")
    return ""


def limits_for(settings, sandbox: bool, **overrides):
    limits = KernelLimits.from_settings(settings)
    changes = {k: v for k, v in overrides.items() if v is not None}
    changes["sandbox"] = sandbox
    return replace(limits, **changes)
