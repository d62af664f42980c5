"""The student's side of the course: `tito export` in a student folder, `tito test`, `tito validate`.

A *student folder* is where a student works on a released notebook (e.g. `09_spatial.ipynb`
handed out from `release/09_spatial/`). It is recognised, from the current directory, as:

1. the nearest folder, from the current directory upwards, holding `tinytorch-student.toml`
   (written by the first student `tito export`, so tito also works from a subfolder), or
2. the current directory when it holds a module notebook (a notebook with nbgrader cells and an
   nbdev `#| default_exp` line),

and in both cases not inside the instructor's course folder (`pyproject.toml` with `[tool.nbdev]`
and `nbs/`), whose `nbs/` also holds module notebooks. A student working inside a clone of the
course repository works in a copy of the notebook outside it.

`tito export` there writes the student's own package `./tinytorch/`: each module notebook of the
folder exported by nbdev (their code, e.g. `tinytorch/core/spatial.py`), beside copies of the
course's other core modules (the foundation modules 00-02, the fast path). Python started in
that folder (Jupyter, `python`, pytest) finds `./tinytorch` before the installed course package,
so `from tinytorch.core.spatial import Conv2d` runs the student's code.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tito.grading.notebooks import strip_ansi

STUDENT_MARKER = "tinytorch-student.toml"
DEFAULT_CELL_TIMEOUT = 120
# IPython names a notebook frame "Cell In[7], line 12, in conv2d_loops(x, weight)".
CELL_FRAME = re.compile(r"Cell In\s*\[(\d+)\],\s*line (\d+)(?:,\s*in ([\w.<>]+))?")
ARROW_LINE = re.compile(r"^-+>\s*\d+\s(.*)$")


class StudentError(Exception):
    "A problem the student can fix; the message says what and how."


# ---------------------------------------------------------------- notebooks

def read_notebook(path: Path):
    "The notebook at `path` (outputs kept), or StudentError naming the file and what is wrong with it."
    path = Path(path)
    if not path.exists():
        raise StudentError(f"{path}: no such file")
    if path.is_dir():
        raise StudentError(f"{path} is a folder: give the notebook file (e.g. {path / '09_spatial.ipynb'})")
    from tito.grading.notebooks import InvalidNotebook, read_submission
    try:
        return read_submission(path.read_bytes())
    except InvalidNotebook as error:
        raise StudentError(f"{path} is not a valid notebook: {error}. If you edited it in a text editor, "
                           f"open it in Jupyter, or start again from a fresh copy of the released notebook") from None


def _cell_source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def is_module_notebook(path: Path) -> bool:
    "A course module notebook: nbgrader cells and an nbdev `#| default_exp`. Unreadable files are not."
    try:
        import json
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = raw["cells"]
        has_nbgrader = any(_nbgrader(c) for c in cells)
        has_export = any(re.search(r"^#\|\s*default_exp\s", _cell_source(c), re.M) for c in cells)
        return has_nbgrader and has_export
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def default_exports(path: Path) -> list:
    "Module names (e.g. 'core.spatial') the notebook's `#| default_exp` lines export."
    names = []
    for cell in read_notebook(path).cells:
        for match in re.finditer(r"^#\|\s*default_exp\s+([\w.]+)", _cell_source(cell), re.M):
            names.append(match.group(1))
    return names


def module_notebooks(folder: Path) -> list:
    return sorted(p for p in Path(folder).glob("*.ipynb") if is_module_notebook(p))


def why_no_module_notebook(folder: Path) -> str:
    "Why `folder` is not a student folder, in a sentence naming its notebooks."
    reasons = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        try:
            read_notebook(path)
            reasons.append(f"{path.name} has no nbgrader cells or no `#| default_exp` line")
        except StudentError as error:
            reasons.append(str(error).split(". If you")[0])
    if not reasons:
        return f"there is no notebook in {folder}: run tito in the folder holding your notebook (e.g. 09_spatial.ipynb)"
    return "; ".join(reasons)


# ---------------------------------------------------------------- student folder

def _is_course_folder(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return ((folder / "nbs").is_dir() and pyproject.exists()
            and "[tool.nbdev]" in pyproject.read_text(encoding="utf-8", errors="replace"))


def find_student_folder(start: Path | None = None):
    "The student folder containing `start` (default: the current directory), or None (see the module docstring)."
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_course_folder(folder):
            return None  # the instructor's tree (nbs/ holds module notebooks too): only a marker below it counts
        if (folder / STUDENT_MARKER).exists():
            return folder
    return here if module_notebooks(here) else None


def course_package() -> Path:
    "The installed course package (the one `tito` runs from), whose core modules students build on."
    import tinytorch
    return Path(tinytorch.__file__).resolve().parent


MARKER_TEXT = """\
# A TinyTorch student folder (written by `tito export`; keep it so tito recognises this folder).
# Here `tito export` writes your own package ./tinytorch from the notebooks of this folder;
# `tito test` runs your notebook's visible checks; `tito validate NOTEBOOK` checks it before you submit.
"""

INIT_TEMPLATE = '''\
"""Your own TinyTorch package, written by `tito export` from the notebooks of this folder.

Exported from your notebooks: {own}.
Copied from the course (modules you did not write here): {copied}.
Python started in this folder imports this package before the installed course package, so
`from tinytorch.core.spatial import Conv2d` runs your code. Files here are regenerated by
`tito export`: edit your notebook, not these files."""
__version__ = "{version}"

# The course's tooling (tito, grading helpers) is not part of your package; let Python find it
# in the installed course package.
_COURSE_PACKAGE = {course!r}
import os as _os
if _os.path.isdir(_COURSE_PACKAGE):
    __path__.append(_COURSE_PACKAGE)
'''


@dataclass
class ExportResult:
    folder: Path
    own: list            # files exported from the student's notebooks, relative to folder
    copied: list         # course modules copied in, relative to folder
    imported_from: str   # where `import tinytorch.core.<first own module>` resolved, checked in a fresh Python


def student_export(folder: Path) -> ExportResult:
    "Export the module notebooks of `folder` into `folder/tinytorch` (nbdev), beside the course's other core modules."
    from nbdev.export import nb_export
    import tinytorch
    folder = Path(folder).resolve()
    notebooks = module_notebooks(folder)
    if not notebooks:
        raise StudentError(f"no module notebook in {folder}: {why_no_module_notebook(folder)}")
    own_modules = {}
    for notebook in notebooks:
        for name in default_exports(notebook):
            if name in own_modules:
                raise StudentError(f"{own_modules[name].name} and {notebook.name} both export tinytorch.{name}: "
                                   f"keep one notebook per module in {folder} (move the other copy elsewhere)")
            own_modules[name] = notebook
    lib = folder / "tinytorch"
    (lib / "core").mkdir(parents=True, exist_ok=True)
    if not (folder / STUDENT_MARKER).exists():
        (folder / STUDENT_MARKER).write_text(MARKER_TEXT, encoding="utf-8")

    course = course_package()
    copied = []
    for source in sorted((course / "core").glob("*.py")):
        name = f"core.{source.stem}"
        if source.stem == "__init__" or name in own_modules:
            continue  # never hand a student the course's version of a module they write
        target = lib / "core" / source.name
        shutil.copyfile(source, target)
        copied.append(target.relative_to(folder))
    (lib / "core" / "__init__.py").write_text("", encoding="utf-8")

    own = []
    for name, notebook in own_modules.items():
        target = lib.joinpath(*name.split(".")).with_suffix(".py")
        target.unlink(missing_ok=True)
        try:
            nb_export(str(notebook), lib_path=str(lib))
        except Exception as error:  # nbdev raises assorted errors on notebooks it cannot read
            raise StudentError(f"nbdev could not export {notebook.name}: {type(error).__name__}: {error}") from None
        if not target.exists():
            raise StudentError(f"{notebook.name} says `#| default_exp {name}` but nbdev wrote no {target.relative_to(folder)}: "
                               f"are its code cells marked `#| export`?")
        own.append(target.relative_to(folder))

    (lib / "__init__.py").write_text(INIT_TEMPLATE.format(
        own=", ".join(str(p) for p in own), copied=", ".join(p.name for p in copied) or "none",
        version=tinytorch.__version__, course=str(course)), encoding="utf-8")

    # Check in a fresh Python, started here as a student's would be, that the import finds their code.
    first = sorted(own_modules)[0]
    probe = subprocess.run([sys.executable, "-c", f"import tinytorch.{first} as m; print(m.__file__)"],
                           cwd=folder, capture_output=True, text=True, env=_clean_env())
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise StudentError(f"exported, but `import tinytorch.{first}` fails in {folder}: {last}\n"
                           f"fix the notebook cell this comes from, then run `tito export` again")
    return ExportResult(folder, own, copied, probe.stdout.strip())


def _code_lines(path: Path) -> list:
    "A generated module's code, without the comment lines that name where it was exported from."
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines()
            if not line.startswith(("# %%", "# AUTOGENERATED"))]


def package_status(folder: Path) -> list:
    """One sentence per module notebook of the student folder: is ./tinytorch up to date with it?
    (The notebook's checks run the notebook; `import tinytorch...` runs the exported file.)"""
    import tempfile
    from nbdev.export import nb_export
    sentences, seen = [], set()
    for notebook in module_notebooks(folder):
        for name in default_exports(notebook):
            relative = Path("tinytorch", *name.split(".")).with_suffix(".py")
            if relative in seen:
                continue
            seen.add(relative)
            exported = Path(folder) / relative
            if not exported.exists():
                sentences.append(f"{relative} is not exported yet: run `tito export` to use your code "
                                 f"as `from tinytorch.{name} import ...`")
                continue
            with tempfile.TemporaryDirectory() as scratch:
                try:
                    nb_export(str(notebook), lib_path=str(Path(scratch) / "tinytorch"))
                    fresh = Path(scratch) / relative
                    same = fresh.exists() and _code_lines(fresh) == _code_lines(exported)
                except Exception:  # an unreadable notebook is reported by the checks themselves
                    continue
            sentences.append(f"{relative} is up to date with {notebook.name}" if same else
                             f"{relative} is older than {notebook.name}: run `tito export` so imports use your latest code")
    return sentences


def _clean_env() -> dict:
    "The environment without PYTHONPATH, so a probe sees what Python started in the folder sees."
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


# ---------------------------------------------------------------- tito test

@dataclass
class CellResult:
    name: str             # grade_id of a graded cell, or "cell N"
    status: str           # passed | failed | not implemented | not run
    detail: str = ""


@dataclass
class TestReport:
    notebook: Path
    checks: list = field(default_factory=list)     # CellResult per graded test cell, in order
    other_errors: list = field(default_factory=list)  # CellResult per other cell that raised
    seconds: float = 0.0
    stopped: str = ""     # why execution stopped early (kernel died), if it did

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status == "passed" for c in self.checks) and not self.other_errors

    def counts(self) -> dict:
        counts = {}
        for check in self.checks:
            counts[check.status] = counts.get(check.status, 0) + 1
        return counts


def _cell_label(nb, index: int) -> str:
    cell = nb.cells[index]
    gid = _nbgrader(cell).get("grade_id")
    if gid:
        return gid
    first = next((line.strip() for line in _cell_source(cell).splitlines()
                  if line.strip() and not line.startswith("#|")), "")
    return f"cell {index + 1} ({first[:40]})"


def explain_error(nb, output) -> tuple:
    "(status, one-line detail) of an `error` output; the detail points at the cell a student must fill or fix."
    ename, evalue = output.get("ename", "Error"), strip_ansi(str(output.get("evalue", ""))).strip()
    traceback = [strip_ansi(part) for part in output.get("traceback", [])]
    by_count = {c.get("execution_count"): i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"}
    frames = [m for part in traceback for m in CELL_FRAME.finditer(part)]
    if ename == "NotImplementedError":
        if frames:
            count, line, function = int(frames[-1].group(1)), frames[-1].group(2), frames[-1].group(3)
            where = _cell_label(nb, by_count[count]) if count in by_count else f"In[{count}]"
            what = f"`{function}`" if function and function != "<module>" else "the cell"
            return "not implemented", f"fill in {what} in cell {where} (line {line})"
        return "not implemented", f"NotImplementedError: {evalue}" if evalue else "NotImplementedError"
    if ename == "KeyboardInterrupt":
        return "failed", "timed out (interrupted): is a loop running forever?"
    first_line = evalue.splitlines()[0] if evalue else ""
    detail = f"{ename}: {first_line}" if first_line else ename
    if not first_line:
        # A bare `assert` has no message: show the line that failed instead.
        arrows = [m.group(1).strip() for part in traceback for line in part.splitlines()
                  if (m := ARROW_LINE.match(line.strip()))]
        if arrows:
            detail += f" at `{arrows[-1][:80]}`"
    return "failed", detail


def run_visible_checks(notebook: Path, timeout: int = DEFAULT_CELL_TIMEOUT) -> TestReport:
    """Execute `notebook` in its own folder (so a student's ./tinytorch is the one imported), every
    cell even after errors, and report each graded test cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from jupyter_client.kernelspec import NoSuchKernel
    notebook = Path(notebook).resolve()
    nb = read_notebook(notebook)
    graded = [i for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and _nbgrader(c).get("grade") and not _nbgrader(c).get("solution")]
    report = TestReport(notebook)
    if not graded:
        raise StudentError(f"{notebook} has no visible checks (no nbgrader test cells): "
                           f"is it the module notebook you were given?")
    kernel = (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    started_cells, finished_cells = [], set()
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(notebook.parent)}},
                            on_cell_start=lambda cell, cell_index: started_cells.append(cell_index),
                            on_cell_executed=lambda cell, cell_index, execute_reply: finished_cells.add(cell_index))
    started = time.monotonic()
    try:
        # The kernel's own start-up warnings are noise here; its errors reach the cells' outputs.
        client.execute(stderr=subprocess.DEVNULL)
    except NoSuchKernel:
        raise StudentError(f"{notebook.name} asks for the Jupyter kernel {kernel!r}, which is not installed "
                           f"(pick 'Python 3' in Jupyter: Kernel > Change Kernel, then save)") from None
    except DeadKernelError:
        dying = started_cells[-1] if started_cells else None
        where = f" while running {_cell_label(nb, dying)}" if dying is not None else ""
        report.stopped = (f"the Python kernel died{where}: out of memory, or code that ends Python "
                          f"(exit(), os._exit)? Later cells did not run")
    report.seconds = time.monotonic() - started

    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if index in graded:
            if errors:
                status, detail = explain_error(nb, errors[0])
            elif index not in finished_cells and _cell_source(cell).strip():
                status, detail = ("failed", "the kernel died running this cell") if started_cells[-1:] == [index] \
                    else ("not run", "an earlier cell stopped the kernel")
            else:
                status, detail = "passed", ""
            report.checks.append(CellResult(_cell_label(nb, index), status, detail))
        elif errors:
            status, detail = explain_error(nb, errors[0])
            report.other_errors.append(CellResult(_cell_label(nb, index), status, detail))
    return report


def format_test_report(report: TestReport, folder: Path | None = None) -> str:
    name = report.notebook.name
    lines = [f"visible checks of {name}:"]
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        lines.append(f"  {check.status:<16} {check.name:<{width}}  {check.detail}".rstrip())
    if report.other_errors:
        lines.append("other cells that raised an error:")
        for other in report.other_errors[:8]:
            lines.append(f"  {other.status:<16} {other.name}  {other.detail}".rstrip())
        if len(report.other_errors) > 8:
            lines.append(f"  ... and {len(report.other_errors) - 8} more")
    if report.stopped:
        lines.append(f"stopped early: {report.stopped}")
    counts = report.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in ("passed", "failed", "not implemented", "not run") if s in counts)
    lines.append(f"{summary} of {len(report.checks)} visible checks ({report.seconds:.1f} s)")
    if report.ok:
        lines.append("all visible checks pass; the hidden checks run when your submission is graded. "
                     f"Next: `tito validate {name}`")
    elif counts.get("not implemented"):
        lines.append("replace each `raise NotImplementedError()` in the cells named above with your code, then run again")
    return "\n".join(lines)


# ---------------------------------------------------------------- tito validate

@dataclass
class ValidationReport:
    notebook: Path
    problems: list = field(default_factory=list)   # sentences, one per problem
    passed_checks: int = 0
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _label_by_source(nb) -> dict:
    return {_cell_source(c).strip(): _nbgrader(c).get("grade_id") or _first_line(_cell_source(c))[:50]
            for c in nb.cells}


def _released_original(notebook: Path):
    "The released notebook this one was handed out as, when the course folder of the installed tito has it."
    course_root = course_package().parent
    candidate = course_root / "release" / notebook.stem / notebook.name
    return candidate if candidate.exists() and candidate.resolve() != notebook.resolve() else None


def validate_notebook(notebook: Path, timeout: int = DEFAULT_CELL_TIMEOUT, release: Path | None = None) -> ValidationReport:
    """nbgrader's Validator on `notebook` (well-formed metadata, locked cells unchanged by checksum,
    graded cells passing), plus what it does not check: a readable file, and no graded or locked
    cell of the released notebook deleted."""
    notebook = Path(notebook).resolve()
    nb = read_notebook(notebook)  # before importing nbgrader (slow): a bad file is reported at once
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput
    from nbgrader.validator import Validator
    from traitlets.config import Config
    report = ValidationReport(notebook)
    grade_ids = [_nbgrader(c).get("grade_id") for c in nb.cells if _nbgrader(c)]
    if not grade_ids:
        report.problems.append(f"{notebook.name} has no nbgrader cells: submit the notebook you were given "
                               f"(cells copied into a new notebook lose their grading metadata)")
        return report

    original = Path(release).resolve() if release else _released_original(notebook)
    if original is not None:
        released = read_notebook(original)
        kept = set(grade_ids)
        deleted = [_nbgrader(c).get("grade_id") for c in released.cells
                   if _nbgrader(c).get("grade_id") and _nbgrader(c).get("grade_id") not in kept]
        if deleted:
            report.problems.append(f"cells of the released notebook are missing: {', '.join(deleted)}; "
                                   f"copy them back from {original}")
    else:
        report.notes.append("deleted cells not checked (no released notebook found; pass --release PATH)")

    config = Config()
    config.Execute.timeout = timeout
    config.Execute.interrupt_on_timeout = True
    config.Execute.raise_on_iopub_timeout = False
    validator = Validator(config=config)
    validator.preprocessors = [CheckCellMetadata, ClearOutput, _quiet_execute()]
    validator.log.setLevel("ERROR")
    try:
        results = validator.validate(str(notebook))
    except Exception as error:  # nbgrader raises its own errors for bad metadata and dead kernels
        message = _first_line(str(error)) or type(error).__name__
        report.problems.append(f"nbgrader could not validate it: {type(error).__name__}: {message}")
        return report

    labels = _label_by_source(nb)
    for cell in results.get("type_changed", []):
        report.problems.append(f"cell {labels.get(cell['source'], _first_line(cell['source']))} was a "
                               f"{cell['new_type']} cell and is now a {cell['old_type']} cell: change it back")
    for cell in results.get("changed", []):
        report.problems.append(f"locked cell {labels.get(cell['source'], _first_line(cell['source']))} was edited: "
                               f"restore its original text (from the released notebook)")
    for cell in results.get("failed", []):
        name = labels.get(cell["source"], _first_line(cell["source"]))
        error = strip_ansi(cell.get("raw_error", ""))
        report.problems.append(f"check {name} fails: {_summarise_traceback(error)}")
    if "changed" not in results and "type_changed" not in results:
        graded = [c for c in nb.cells if _nbgrader(c).get("grade") and c.cell_type == "code"]
        report.passed_checks = len(graded) - len(results.get("failed", []))
    return report


def _quiet_execute():
    "nbgrader's Execute, with the kernel's start-up warnings (not the cells' output) kept off the student's terminal."
    from nbgrader.preprocessors import Execute

    class QuietExecute(Execute):
        def start_new_kernel(self, **kwargs):
            kwargs.setdefault("stderr", subprocess.DEVNULL)
            return super().start_new_kernel(**kwargs)
    return QuietExecute


def _summarise_traceback(text: str) -> str:
    "The last line of a traceback that names an exception, or the first line."
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line)]
    chosen = named[-1].rstrip(":") if named else (lines[0] if lines else "no output")
    if chosen.startswith("NotImplementedError"):
        frames = CELL_FRAME.findall(text)
        function = frames[-1][2] if frames else ""
        where = f"`{function}`" if function and function != "<module>" else "a cell"
        chosen += f" ({where} still has `raise NotImplementedError()`: fill it in)"
    return chosen[:200]


def format_validation(report: ValidationReport) -> str:
    name = report.notebook.name
    if report.ok:
        lines = [f"{name} is valid: well formed, locked cells unchanged, {report.passed_checks} visible checks pass."]
    else:
        lines = [f"{name} is NOT valid ({len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}):"]
        lines += [f"  - {problem}" for problem in report.problems]
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)
