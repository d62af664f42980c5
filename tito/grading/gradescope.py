"""Gradescope's autograder, with the course's own checks.

`build_autograder` writes the zip Gradescope asks for (its "Autograder Specifications": `setup.sh`
and `run_autograder` at the root of the archive, unpacked into /autograder/source): the course's
source and release notebooks, settings.ini, the reference solution's records (computed here, so
no submission waits for them), this package's code and the pinned dependencies the grader needs.

`run` is what `run_autograder` calls for each submission: the same pipeline as `tito grade`
(`load_assignment`, `reference_records`, `grade_one`: restore the instructor's cells, execute,
score by records in this process) on /autograder/submission/*.ipynb, and
/autograder/results/results.json in Gradescope's format: `score`, `execution_time`, `output`,
`visibility`, `stdout_visibility`, and one test per graded check (`name`, `number`, `score`,
`max_score`, `status`, `output` = the concept on failure, `visibility` from settings.ini).

Gradescope runs run_autograder, and so the student's code, as root in one container. Here:
- /autograder/source (hidden checks, solutions, reference records, this package) is made
  root-only (0700) before anything runs, and so is the work folder of the graded copies;
- the kernel runs in bubblewrap when the container allows it (the kernel then sees no
  /autograder at all); where it does not, it still runs as an unprivileged uid (`--kernel-uid`,
  setpriv, no capabilities, no new privileges) with the process and memory caps;
- a submitted file that is a link, or lies outside /autograder/submission, is not read;
- every text put into results.json is scanned for lines of the hidden checks and solutions
  (the student's own lines excepted) and withheld if one is found; stdout gets scores only.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import sys
import tempfile
import traceback
import zipfile
from dataclasses import replace
from pathlib import Path

DEFAULT_ROOT = Path("/autograder")
ROOT_VARIABLE = "TITO_AUTOGRADER_ROOT"       # run_autograder's stand-in for /autograder (tests)
KERNEL_UID = 1_879_999_999                    # below the sandbox's pool; no passwd entry needed
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")
VENV = "/opt/tito-venv"
# What the grader imports (not the tests' or the instructor's tools): pinned to this machine's versions.
GRADER_REQUIREMENTS = ("numpy", "tqdm", "matplotlib", "scikit-learn", "nbformat", "nbconvert", "ipykernel",
                       "jupyter_client")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu base image).
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap util-linux
# requirements.txt was pinned on Python {python}: an older python3 cannot install those versions.
python3 -c 'import sys; sys.exit(sys.version_info < ({major}, {minor}))' || {{
    echo "tito: needs Python >= {python} (pins made there): choose a newer base image (Ubuntu 24.04)" >&2; exit 1; }}
python3 -m venv {venv}
{venv}/bin/pip install --no-cache-dir --upgrade pip
{venv}/bin/pip install --no-cache-dir -r requirements.txt
chmod -R a+rX {venv}
# The hidden checks, solutions and reference records: root only (run_autograder does it again).
chmod -R go-rwx /autograder/source
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission. TITO_AUTOGRADER_ROOT stands in for /autograder
# (tests); TITO_PYTHON for the interpreter setup.sh installed.
set -euo pipefail
ROOT="${{TITO_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{TITO_PYTHON:-{venv}/bin/python}}"
cd "$ROOT"
# This package's code comes from the root-only source folder; the grading kernels import only the
# student runtime built from it (never PYTHONPATH: they run Python with -I).
export PYTHONPATH="$ROOT/source/package"
exec "$PYTHON" -m tito.grading.gradescope --root "$ROOT"
"""


# ---------------------------------------------------------------- settings

def visibility_settings(settings_ini: Path) -> dict:
    "settings.ini [gradescope]: when students see visible and hidden checks, and run_autograder's output."
    parser = configparser.ConfigParser()
    parser.read(settings_ini, encoding="utf-8")
    section = parser["gradescope"] if parser.has_section("gradescope") else {}
    chosen = {"visible_checks": section.get("visible_checks", "visible"),
              "hidden_checks": section.get("hidden_checks", "after_published"),
              "stdout_visibility": section.get("stdout_visibility", "hidden")}
    for key, value in chosen.items():
        if value not in VISIBILITIES:
            raise ValueError(f"{settings_ini}: [gradescope] {key} must be one of {', '.join(VISIBILITIES)}, "
                             f"got {value!r}")
    return chosen


def hidden_check_ids(assignment) -> set:
    "Grade ids of the graded cells that hold hidden tests."
    from tito.grading.notebooks import HIDDEN, cell_text, grade_id, is_graded
    return {grade_id(c) for c in assignment.source.cells if is_graded(c) and HIDDEN[0] in cell_text(c)}


# ---------------------------------------------------------------- the zip

def pinned_requirements(names=GRADER_REQUIREMENTS) -> list:
    "`name==version` of `names` and everything they need, as installed here."
    from importlib.metadata import PackageNotFoundError, distribution
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    pins, todo = {}, [(name, frozenset()) for name in names]
    while todo:
        name, extras = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue   # an optional dependency that is not installed here is not needed here
        key = canonicalize_name(dist.metadata["Name"])
        if key in pins and not extras:
            continue
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra})
                                              for extra in (extras or {""})):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return sorted(pins.values(), key=str.lower)


def _add(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    archive.writestr(info, data)


def build_autograder(root: Path, out: Path, settings, module: str | None = None) -> Path:
    """Write Gradescope's autograder zip for `module` of the course at `root` into `out`."""
    import tinytorch
    import tito
    from tito.grading.sandbox import sandbox_available
    from tito.grading.course import load_misconceptions, limits_for, load_assignment, reference_records
    from tito.grading.model import STATE
    root, out = Path(root).resolve(), Path(out)
    module = module or settings.modules[0]
    notebook = settings.notebook(module)
    with tempfile.TemporaryDirectory(prefix="tito-gradescope-") as stage_name:
        course = Path(stage_name) / "course"
        for part in ("source", "release"):
            if (root / part / module).is_dir():
                shutil.copytree(root / part / module, course / part / module)
        shutil.copy(root / "settings.ini", course / "settings.ini")
        library = root / "misconceptions" / f"{module}.json"
        if library.exists():
            (course / "misconceptions").mkdir()
            shutil.copy(library, course / "misconceptions" / library.name)
        visibility_settings(course / "settings.ini")   # refuse a bad [gradescope] section now, not on Gradescope
        assignment = load_assignment(course, module, notebook)
        available, _ = sandbox_available()
        reference_records(assignment, limits_for(settings, sandbox=available), course / STATE)
        load_misconceptions(assignment, course, course / STATE)   # what each variant prints, computed here
        files = {f"course/{p.relative_to(course)}": p.read_bytes() for p in sorted(course.rglob("*")) if p.is_file()}
    for package in (Path(tinytorch.__file__).resolve().parent, Path(tito.__file__).resolve().parent):
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"package/{package.name}/{path.relative_to(package)}"] = path.read_bytes()
    files["requirements.txt"] = ("\n".join(pinned_requirements()) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(temp, "w") as archive:
        major, minor = sys.version_info[:2]
        setup = SETUP_SH.format(venv=VENV, python=f"{major}.{minor}", major=major, minor=minor)
        _add(archive, "setup.sh", setup.encode(), executable=True)
        _add(archive, "run_autograder", RUN_AUTOGRADER.format(venv=VENV).encode(), executable=True)
        for name, data in files.items():
            _add(archive, name, data)
    os.replace(temp, out)
    return out


# ---------------------------------------------------------------- one submission

def _private(path: Path) -> None:
    "Make `path` and everything under it unreadable to any uid but root's (the grader's)."
    for item in [path, *path.rglob("*")]:
        if not item.is_symlink():
            item.chmod(item.stat().st_mode & 0o700)


def pick_submission(folder: Path, notebook: str):
    "The notebook to grade in Gradescope's submission folder (links and files outside it are not read)."
    from tito.grading.model import Submission
    folder = Path(folder)
    inside = folder.resolve()
    found = []
    for path in sorted(folder.rglob("*.ipynb")) if folder.is_dir() else []:
        relative = path.relative_to(folder)
        if ".ipynb_checkpoints" in relative.parts or path.name.startswith("."):
            continue
        links = [folder.joinpath(*relative.parts[:i + 1]).is_symlink() for i in range(len(relative.parts))]
        if any(links) or not path.resolve().is_relative_to(inside) or not path.is_file():
            continue
        found.append(path)
    named = [p for p in found if p.name == notebook]
    if named:
        return Submission("submission", min(named, key=lambda p: len(p.parts)))
    if len(found) == 1:
        return Submission("submission", found[0], f"graded {found[0].name}: expected the file name {notebook}")
    if found:
        return Submission("submission", None, f"no {notebook}; found {', '.join(p.name for p in found)}: "
                                              f"submit {notebook} alone")
    return Submission("submission", None, f"no notebook in the submission: expected {notebook}")


WITHHELD = "failed (the details would quote the hidden checks: ask your instructor)"


def results_document(result, assignment, visibility: dict, own_text: str) -> dict:
    "Gradescope's results.json for one graded submission, with any text that would leak withheld."
    from tito.grading import feedback as fb
    hidden = hidden_check_ids(assignment)
    tests = []
    for number, (gid, points) in enumerate(assignment.graded, start=1):
        got = float(result.cells.get(gid, 0.0))
        passed = got >= points - 1e-9
        reasons = result.messages.get(gid, [])
        output = "passed" if passed else ("; ".join(reasons) if reasons else f"failed ({result.status})")
        if fb.find_leaks(output, assignment.secrets, own_text):
            output = WITHHELD
        tests.append({"name": gid, "number": str(number), "score": got, "max_score": float(points),
                      "status": "passed" if passed else "failed", "output": output, "output_format": "text",
                      "visibility": visibility["hidden_checks" if gid in hidden else "visible_checks"]})
    # Gradescope grades the written answers itself (manual questions): the autograder's total is the autograded part.
    auto_max = sum(points for _, points in assignment.graded)
    summary = f"{result.score:g} / {auto_max:g} ({result.status})"
    if result.status != "graded" and result.detail:
        detail = result.detail if not fb.find_leaks(result.detail, assignment.secrets, own_text) else WITHHELD
        summary += f": {detail}"
    return {"score": float(result.score), "execution_time": round(result.seconds, 2), "output": summary,
            "output_format": "text", "stdout_visibility": visibility["stdout_visibility"], "tests": tests}


def grade_submission(root: Path, work: Path, kernel_uid: int = KERNEL_UID) -> dict:
    from tito.grading.sandbox import sandbox_available
    from tito.grading.course import load_misconceptions, limits_for, load_assignment, reference_records
    from tito.grading.model import STATE
    from tito.grading.pipeline import grade_one
    from tito.grading.notebooks import InvalidNotebook, cell_text, read_submission
    from tito.settings import load_settings
    course = root / "source" / "course"
    settings = load_settings(course)
    visibility = visibility_settings(course / "settings.ini")
    module = settings.modules[0]
    notebook = settings.notebook(module)
    available, why = sandbox_available()
    limits = limits_for(settings, sandbox=available)
    if not available:
        limits = replace(limits, unsandboxed_uid=kernel_uid)
    assignment = load_assignment(course, module, notebook)
    reference = reference_records(assignment, limits, course / STATE)
    load_misconceptions(assignment, course, course / STATE)
    sub = pick_submission(root / "submission", notebook)
    result = grade_one(sub, assignment, reference, limits, work)
    try:
        readable = sub.path is not None and not sub.oversize(limits.max_notebook_mb)
        own = "\n".join(cell_text(c) for c in read_submission(sub.data()).cells) if readable else ""
    except (InvalidNotebook, OSError, ValueError):
        own = ""
    document = results_document(result, assignment, visibility, own)
    mode = "bubblewrap sandbox" if available else f"no bubblewrap ({why}); kernel as uid {kernel_uid}"
    print(f"tito: {sub.path.name if sub.path else 'no notebook'}: {result.score:g}/{sum(p for _, p in assignment.graded):g} "
          f"({result.status}); {mode}")
    for test in document["tests"]:
        print(f"  {test['name']:<28} {test['score']:g}/{test['max_score']:g} {test['status']}")
    return document


def run(root: Path = DEFAULT_ROOT, kernel_uid: int = KERNEL_UID) -> int:
    """Grade /autograder/submission into /autograder/results/results.json; always writes one
    (a failure of the grader's own gives 0 and says the instructor has the details)."""
    from tito.grading.intake import atomic_write
    root = Path(root).resolve()
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    if (root / "source").is_dir():
        _private(root / "source")
    work = root / "tito-work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(mode=0o700)
    try:
        document = grade_submission(root, work, kernel_uid)
    except Exception:  # noqa: BLE001 - Gradescope must get a results.json whatever went wrong
        (work / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        print(f"tito: the autograder failed; the traceback is in {work / 'error.log'} (root only)")
        document = {"score": 0.0, "output": "The autograder could not grade this submission; your instructor "
                                            "has the details.", "tests": []}
    atomic_write(results / "results.json", json.dumps(document, indent=1, ensure_ascii=False))
    return 0   # Gradescope reads results.json; a non-zero exit would hide it behind "autograder failed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Grade one Gradescope submission (what run_autograder calls).")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get(ROOT_VARIABLE, DEFAULT_ROOT)),
                        help=f"Gradescope's /autograder, or a folder laid out like it (also ${ROOT_VARIABLE})")
    parser.add_argument("--kernel-uid", type=int, default=KERNEL_UID,
                        help="unprivileged uid the kernel runs as where bubblewrap cannot run")
    args = parser.parse_args(argv)
    return run(args.root, args.kernel_uid)


if __name__ == "__main__":
    sys.exit(main())
