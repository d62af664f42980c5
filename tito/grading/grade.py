"""`tito grade DIR`: grade a class of submissions, one sandboxed kernel each.

Per submission (in a worker thread): read and validate the JSON; put back the instructor's
locked and graded cells (hidden tests included) from `source/`; copy only the student's own
`.ipynb` into a fresh folder and execute the restored notebook from memory through
`tito.grading.sandbox`; score each graded cell in this process (no error output AND the
reference records match); write the autograded notebook and the feedback page.
The main thread is the only writer of the gradebook, the journal and `grades.csv`.

Resume: after a submission's gradebook row is committed, a journal entry keyed by the
submission's content hash is written (temp + rename). A re-run skips what the journal holds
for the same bytes and the same source, and re-grades anything changed.
"""
import csv
import html
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat

from tito.grading import feedback as fb
from tito.grading import intake
from tito.grading.sandbox import KernelLimits, execute_notebook, sandbox_available
from tito.grading.notebooks import (MARKER_WORDS, InvalidNotebook, cell_text, content_hash, demo_cells,
                                         file_hash, grade_id, graded_cells, is_demo, is_graded, manual_cells,
                                         nbgrader_meta, read_submission, restore_cells, secret_lines)
from tito.grading.scoring import grade_cells, points_and_reasons, reference_records_of, score_cells, short
from tinytorch.record import decode_records, encode_record
from tito.grading import term
from tito.grading.deadline import DeadlineError, load_policy as load_deadline, timestamp_beside
from tito.grading.term import Manual, render_detail

STATE = ".tito-grade"          # journal and reference cache, inside the output folder
FROM_SETTINGS = object()       # grade_batch(deadline=...): read settings.ini's [deadline]
STATUSES = ("graded", "timeout", "crashed", "memory", "invalid", "missing")


class GradingError(RuntimeError):
    "The batch cannot be graded (not a student's fault): bad course, failing reference, full disk, busy folder."


def atomic_write(path: Path, data, mode: str = "w") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)   # mkstemp makes it private; grades and feedback are meant to be read
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass
class Submission:
    student: str
    path: Path | None          # None: no notebook to grade
    problem: str = ""          # why the path is odd or missing
    student_name: str = ""     # the name an LMS download gave (Canvas), kept in grades.csv
    lms_late: bool | None = None   # the LMS marked it late (None: the intake does not say)
    refused: str = ""          # why the file is not read at all (a link out of the submissions folder)

    def data(self) -> bytes | None:
        return self.path.read_bytes() if self.path is not None and not self.refused else None

    def digest(self) -> str:
        "The content hash of the submitted bytes (\"missing\" without a notebook), read in pieces."
        if self.refused:
            return content_hash(f"refused: {self.refused}".encode())   # a link is never read
        return file_hash(self.path) if self.path is not None else "missing"

    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None and not self.refused else 0

    def oversize(self, max_mb: float) -> str:
        "Why the file is too large to read (empty when it is not)."
        size = self.size()
        if size <= max_mb * 2**20:
            return ""
        return (f"the notebook is {size / 2**20:,.0f} MiB, above the {max_mb:g} MiB a submission may be: clear "
                f"its outputs (Kernel > Restart Kernel and Clear Outputs), save and submit again")


@dataclass
class Assignment:
    module: str
    notebook: str
    source: object             # the instructor's notebook (solutions, hidden tests)
    release: object            # the student version (visible tests only)
    source_hash: str
    graded: list               # [(grade_id, points)] of the autograded cells
    secrets: dict
    manual: list = field(default_factory=list)   # [(grade_id, points)] of the answers a person grades
    policy: object = None      # the library-use policy (tito.grading.policy.Policy), set by grade_batch
    misconceptions: list = field(default_factory=list)   # tito.grading.misconceptions.Misconception
    variants: dict = field(default_factory=dict)         # what each misconception prints: {id: {grade_id: records}}

    @property
    def max_score(self) -> float:
        return sum(points for _, points in self.graded) + sum(points for _, points in self.manual)


@dataclass
class Result:
    student: str
    status: str
    score: float
    max_score: float
    detail: str
    cells: dict = field(default_factory=dict)
    submission_hash: str = ""
    source_hash: str = ""
    seconds: float = 0.0       # wall time of the notebook's execution
    kernel_cpu: float = 0.0    # CPU seconds its kernel(s) used
    # What the term adds (tito.grading.term.finalise), filled when grades.csv is written:
    raw_score: float | None = None       # auto + manual, before the late penalty
    late_by_hours: float | None = None   # None: no deadline, or the time is unknown
    penalty: float = 0.0
    manual_score: float = 0.0
    needs_manual: float = 0.0            # points of written answers no person has graded yet
    late: str = ""                       # term.LATE_STATES, or "" without a [deadline]
    blank_answers: list = field(default_factory=list)   # written answers left as released: 0, nobody needs to read them
    messages: dict = field(default_factory=dict)   # {grade_id: [reasons]} of the failing checks
    student_name: str = ""                          # as the LMS names the student (Canvas)
    lms_late: bool | None = None                    # the LMS's own late flag (Canvas LATE), None when it has none
    flags: list = field(default_factory=list)  # structured integrity flags (library use: policy.Finding.as_flag)
    policy: str = ""           # digest of the library-use policy it was graded under
    notes: list = field(default_factory=list)   # [kind, text] pairs; `detail` is their texts joined
    withheld: bool = False     # the feedback page was withheld: it would have shown secret text
    sandboxed: bool | None = None   # graded in the sandbox; None in journals from before this field

    def graded_in_sandbox(self) -> bool:
        "Was this graded with the sandbox on? (Journals from before the `sandboxed` field say it in their notes.)"
        if self.sandboxed is not None:
            return self.sandboxed
        return not any(kind == "sandbox" for kind, _ in self.notes) and not self.detail.startswith("sandbox off")

    def flag(self, kind: str, text: str) -> None:
        "Add a note (kept structured in `notes`) and render `detail` again."
        if not self.notes and self.detail:   # a row from before notes were kept
            self.notes.append(["detail", self.detail])
        self.notes.append([kind, text])
        self.detail = render_detail(self.notes)

    def row(self, graded: list) -> list:
        optional = lambda value: "" if value is None else points_text(value)   # noqa: E731
        return ([_spreadsheet_safe(self.student), points_text(self.score), points_text(self.max_score), self.status,
                 _spreadsheet_safe(self.detail), _spreadsheet_safe(self.student_name), optional(self.raw_score),
                 self.late, optional(self.late_by_hours), points_text(self.penalty), points_text(self.manual_score),
                 points_text(self.needs_manual), "" if self.lms_late is None else ("yes" if self.lms_late else "no"),
                 self.submission_hash, self.source_hash]
                + [points_text(self.cells.get(gid, 0.0)) for gid, _ in graded])


def points_text(points: float) -> str:
    "Points as grades.csv writes them: hundredths at most, no trailing zeros (12, 7.5, 3.33)."
    return f"{round(points, 2):g}"


def _spreadsheet_safe(text: str) -> str:
    "Text a spreadsheet will not run as a formula (a file named '=cmd|...ipynb' is a student's to choose)."
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


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


# ---------------------------------------------------------------- finding submissions

def discover_submissions(source: Path, module: str, notebook: str, state: Path, max_notebook_mb: float) -> list:
    """`discover` for a folder, or for a .zip / .tar(.gz) of one (as LMSs hand them out), which is
    unpacked into the private `state/unpacked/`: its regular files only. A student whose part of the
    archive held a link (or a member pointing outside it) is refused, saying which member."""
    from tito.grading import lms
    if not intake.is_archive(source) or lms.is_canvas_download(source):   # Canvas zips: lms unpacks them itself
        return discover(source, module, notebook)
    dest = Path(state) / "unpacked" / Path(source).name
    try:
        refused = intake.unpack(source, dest, int(max_notebook_mb * 2**20))
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise GradingError(f"{source} is not an archive that can be read ({type(error).__name__}: {error})") from None
    found = {sub.student: sub for sub in discover(dest, module, notebook)}
    for member, why in refused.items():
        parts = Path(member).parts
        parts = parts[1:] if parts[:1] == ("submitted",) else parts
        # Only a member that could be the student's notebook (or a folder on its way) refuses the student.
        if parts and ".." not in parts and not Path(member).is_absolute() and (
                member.endswith(".ipynb") or len(parts) <= 2):
            student = Path(parts[0]).stem if len(parts) == 1 else parts[0]
            found[student] = Submission(student, dest / member, refused=why)
    return [found[name] for name in sorted(found)]


def discover(directory: Path, module: str, notebook: str) -> list:
    """Submissions in nbgrader's layout (`DIR/<student>/<module>/<notebook>`, or a course folder
    holding `submitted/`) or a flat folder of `<student>.ipynb` files."""
    directory = Path(directory)
    from tito.grading import lms
    if lms.is_canvas_download(directory):   # a Canvas "Download Submissions" zip or folder
        return lms.discover_canvas(directory, module, notebook)
    if not directory.is_dir():
        raise GradingError(f"{directory} is not a folder of submissions (nor a .zip, .tar or .tar.gz of one)")
    if (directory / "submitted").is_dir():
        directory = directory / "submitted"
    found = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        # A link out of the folder is never followed (a link to source/ would be the solution).
        outside = intake.link_out_of(entry, directory)
        if entry.suffix == ".ipynb" and (entry.is_file() or entry.is_symlink()):
            found[entry.stem] = Submission(entry.stem, entry, refused=outside)
        elif outside and not entry.is_file():
            found[entry.name] = Submission(entry.name, None, outside)
        elif entry.is_dir():
            found[entry.name] = _from_student_folder(entry, module, notebook, directory)
    return [found[name] for name in sorted(found)]


def _from_student_folder(folder: Path, module: str, notebook: str, root: Path) -> Submission:
    student = folder.name
    assignment = folder / module
    outside = intake.link_out_of(assignment, root) if os.path.lexists(assignment) else ""
    if outside:
        return Submission(student, None, outside)
    if not assignment.is_dir():
        return Submission(student, None, f"no {module}/ folder in {folder.name}/")
    expected = assignment / notebook
    if expected.is_file() or expected.is_symlink():
        return Submission(student, expected, refused=intake.link_out_of(expected, root))
    others = sorted(p for p in assignment.glob("*.ipynb") if p.is_file() or p.is_symlink())
    if len(others) == 1:
        return Submission(student, others[0], f"graded {others[0].name}: expected the file name {notebook}",
                          refused=intake.link_out_of(others[0], root))
    if others:
        return Submission(student, None, f"no {notebook}; found {', '.join(p.name for p in others)}")
    return Submission(student, None, f"no {notebook} in {folder.name}/{module}/")


# ---------------------------------------------------------------- reference records

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


# ---------------------------------------------------------------- one submission

def _summarise(messages: dict) -> list:
    "Group failing cells by reason: 'reason [cell, cell]'."
    by_reason = {}
    for gid, reasons in messages.items():
        by_reason.setdefault(reasons[0], []).append(gid)
    return [f"{reason} [{', '.join(gids)}]" for reason, gids in by_reason.items()]


def grade_one(sub: Submission, assignment: Assignment, reference: dict, limits, out: Path,
              sandbox_note: str = "", scanned: set | None = None) -> Result:
    """Grade one submission; writes its autograded notebook and feedback page. Never raises for
    student faults: a page that would leak secret text is withheld (the row says so); a bug of
    the grader's own costs only this submission (status crashed, the error named in `detail`, so
    the instructor sees it). A full disk raises DiskFull: no later submission could be written.
    The student's name is added to `scanned` once their page has been scanned for leaks and written."""
    try:
        return _grade_one(sub, assignment, reference, limits, out, sandbox_note, scanned)
    except (GradingError, intake.DiskFull):
        raise
    except Exception as error:  # noqa: BLE001 - one submission must never stop the class
        if intake.disk_full(error):
            raise intake.DiskFull(f"the disk is full ({type(error).__name__}: {short(str(error), 120)})") from error
        import traceback
        traceback.print_exc()
        why = f"internal grading error, tell the instructor: {type(error).__name__}: {short(str(error))}"
        outcome = Result(student=sub.student, status="crashed", score=0.0, max_score=assignment.max_score,
                         detail=why, cells={gid: 0.0 for gid, _ in assignment.graded}, submission_hash="",
                         source_hash=assignment.source_hash, notes=[["internal", why]], sandboxed=bool(limits.sandbox))
        try:   # a page that says so, so that the end-of-run scan finds every student's page
            _write_ungraded(sub, assignment, outcome, out)
        except Exception:  # noqa: BLE001 - the row above is what matters
            traceback.print_exc()
        return outcome


def _grade_one(sub: Submission, assignment: Assignment, reference: dict, limits, out: Path,
               sandbox_note: str = "", scanned: set | None = None) -> Result:
    zero = {gid: 0.0 for gid, _ in assignment.graded}
    base = dict(student=sub.student, max_score=assignment.max_score, source_hash=assignment.source_hash,
                policy=assignment.policy.digest() if assignment.policy is not None else "",
                sandboxed=bool(limits.sandbox))
    notes = [["sandbox", sandbox_note]] if sandbox_note else []

    def ungraded(status: str, why: str, digest: str) -> Result:
        outcome = Result(status=status, score=0.0, detail="", cells=zero, submission_hash=digest,
                         notes=notes + [["submission", why]], **base)
        outcome.detail = render_detail(outcome.notes)
        _write_ungraded(sub, assignment, outcome, out)
        return outcome

    if sub.path is None:
        return ungraded("missing", sub.problem, "missing")
    if sub.problem:
        notes.append(["submission", sub.problem])
    if sub.refused:
        return ungraded("invalid", sub.refused, sub.digest())
    too_large = sub.oversize(limits.max_notebook_mb) or intake.precheck(
        sub.path, sub.size(), limits.grader_memory_mb, limits.max_cells, limits.max_nesting)
    if too_large:
        return ungraded("invalid", too_large, sub.digest())
    data = sub.data()
    digest = content_hash(data)
    try:
        submission = read_submission(data, limits.max_cells, limits.max_nesting)
    except InvalidNotebook as error:
        return ungraded("invalid", str(error), digest)
    restored, flags = restore_cells(submission, assignment.source, assignment.release)
    blank = blank_answers(submission, assignment)
    notes += [["restore", flag] for flag in flags]
    workdir = intake.private_workdir()
    try:
        # Only the student's own bytes go beside the kernel; the restored notebook stays in memory.
        # The folder is private (0700); a sandboxed kernel reads the file through its own bind mount.
        (workdir / assignment.notebook).write_bytes(data)
        os.chmod(workdir / assignment.notebook, 0o644)
        # Unchanged demo cells (plots, measurements) grade nothing, so they are not run.
        result = execute_notebook(restored, workdir, limits, skip=demo_cells(restored, assignment.source))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    scores = grade_cells(result.notebook, assignment.graded, reference)
    points, messages = points_and_reasons(scores)
    if assignment.variants:   # a wrong record a known misconception explains is named by it
        from tito.grading.misconceptions import name_them
        printed = {gid: score.printed for gid, score in scores.items()}
        for gid, explanations in name_them(printed, reference, assignment.variants, assignment.misconceptions).items():
            messages[gid] = explanations[:1] + messages.get(gid, [])
    findings, elsewhere = [], []
    if assignment.policy is not None:   # library use: a static scan, then on_use (tito.grading.policy)
        from tito.grading import policy as library
        findings = library.check_submission(submission, assignment, assignment.policy)
        points, messages = library.apply(findings, points, messages)
        elsewhere = [f"outside the graded functions the code uses {', '.join(f.names[:3])} (not scored)"
                     for f in findings if not f.function]
    status = "graded" if result.status == "ok" else result.status
    if status not in STATUSES:
        status = "crashed"
    if result.detail:
        notes.append(["execution", short(result.detail, 300)])
    if status in ("crashed", "timeout"):
        notes.append(["kept", kept_points(result, assignment.graded, points)])
    notes += [["cells", line] for line in _summarise(messages)]
    notes += [["library", line] for line in elsewhere]
    outcome = Result(status=status, score=round(float(sum(points.values())), 2), detail=render_detail(notes),
                     cells=points, blank_answers=blank, messages=messages, flags=[f.as_flag() for f in findings],
                     submission_hash=digest, seconds=result.seconds, kernel_cpu=result.kernel_cpu, notes=notes,
                     **base)
    # a cell the library-use policy zeroed lists no check marks: its message says why
    _write_outputs(sub, assignment, result.notebook, submission, points, messages, outcome, out,
                   checks={gid: score.checks for gid, score in scores.items() if points[gid] == score.points})
    if scanned is not None:
        scanned.add(sub.student)
    return outcome


def blank_answers(submission, assignment: Assignment) -> list:
    "The written answers a student left as released (or deleted): nbgrader scores them 0, 'No response'."
    released = {grade_id(c): cell_text(c).strip() for c in assignment.release.cells if grade_id(c)}
    written = {grade_id(c): cell_text(c).strip() for c in submission.cells if grade_id(c)}
    return [gid for gid, _ in assignment.manual if written.get(gid, "") in ("", released.get(gid, ""))]


def kept_points(result, graded: list, points: dict) -> str:
    """Which graded cells kept their points after a crash or a timeout, and why: for a row whose
    status and score would otherwise seem to disagree."""
    cells = result.notebook.cells
    faults = sorted(set(result.timed_out_cells) | set(result.not_run_cells))
    hit = [grade_id(cells[i]) for i in faults if is_graded(cells[i]) and grade_id(cells[i])]
    kept = [gid for gid, _ in graded if points.get(gid, 0) > 0]
    names = f"all {len(graded)}" if len(kept) == len(graded) else \
        f"{', '.join(kept) if kept else 'none'} of the {len(graded)}"
    where = ", ".join(f"cell {i + 1}" for i in faults) or "no cell"
    text = (f"points kept by {names} graded cells"
            + (": each ran to its end and matched the reference" if kept else ""))
    return text + (f"; the fault hit {where}, which grades nothing" if not hit else
                   f"; the fault hit {where}, so {', '.join(hit)} lost {'its' if len(hit) == 1 else 'their'} points")


def _write_ungraded(sub, assignment, outcome, out: Path) -> None:
    "No notebook to run: no autograded copy, and a feedback page that says why."
    stale = out / "autograded" / sub.student / assignment.module
    if stale.exists():
        shutil.rmtree(stale)
    why = {"missing": "no notebook was found", "invalid": "the notebook could not be read"}.get(
        outcome.status, "the grader could not grade it")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"# Feedback: {assignment.module}, {sub.student}\n\n**Score: 0 / {outcome.max_score:g}** "
        f"(status: {outcome.status}): {why}.\n\n{html.escape(outcome.detail)}\n\n{_provenance(outcome)}")])
    nb.cells[0]["id"] = "feedback-0"
    atomic_write(out / "feedback" / sub.student / f"{assignment.module}.html",
                 fb.to_html(nb, f"Feedback: {assignment.module}, {sub.student}"))


def _provenance(outcome: Result) -> str:
    "The two hashes that reproduce a grade at an appeal: the submitted bytes and the course's tests."
    return (f"<small>submission sha256 <code>{outcome.submission_hash}</code> · "
            f"tests sha256 <code>{outcome.source_hash}</code></small>")


def _page_header(assignment: Assignment, sub: Submission, outcome: Result) -> str:
    auto_max = sum(points for _, points in assignment.graded)
    lines = [f"# Feedback: {assignment.module}, {sub.student}", "",
             f"**Autograded: {points_text(outcome.score)} / {auto_max:g}** (status: {outcome.status})"]
    if assignment.manual:
        written = sum(points for _, points in assignment.manual)
        lines.append(f"Written answers ({len(assignment.manual)}, {written:g} points) are graded by hand; "
                     f"a late penalty, if any, is applied to the total in the course's grades.")
    return "\n".join(lines + ["", _provenance(outcome)])


def _write_outputs(sub, assignment, executed, submission, points, messages, outcome, out: Path,
                   checks: dict | None = None) -> None:
    autograded = out / "autograded" / sub.student / assignment.module / assignment.notebook
    atomic_write(autograded, nbformat.writes(executed))
    own_text = "\n".join(cell_text(c) for c in submission.cells)
    header = _page_header(assignment, sub, outcome)
    page = fb.to_html(fb.feedback_notebook(executed, own_text, assignment.secrets, points, messages,
                                           assignment.graded, header, checks),
                      f"Feedback: {assignment.module}, {sub.student}")
    leaks = fb.find_leaks(page, assignment.secrets, own_text)
    if leaks:
        withhold_feedback(out, assignment, outcome, leaks)
        return
    atomic_write(out / "feedback" / sub.student / f"{assignment.module}.html", page)


def withhold_feedback(out: Path, assignment, outcome: Result, leaks: list) -> None:
    """A page that would show secret text costs its student only: it is replaced by a page saying
    it was withheld, the row is flagged, and the grader says so loudly (naming the lines on the
    instructor's terminal, never in grades.csv, which may reach students)."""
    print(f"WARNING: the feedback page of {outcome.student} would have shown secret text, so it is withheld "
          f"(review autograded/{outcome.student}/): {'; '.join(leaks[:5])}", file=sys.stderr, flush=True)
    outcome.withheld = True
    outcome.flag("withheld", f"feedback withheld for the instructor's review: the page would have shown "
                             f"{len(leaks)} line{'s' if len(leaks) != 1 else ''} of hidden or solution text")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"# Feedback: {assignment.module}, {outcome.student}\n\n**Score: {outcome.score:g} / "
        f"{outcome.max_score:g}** (status: {outcome.status}).\n\nThe detailed page is withheld until your "
        "instructor has reviewed it.")])
    nb.cells[0]["id"] = "feedback-0"
    atomic_write(out / "feedback" / outcome.student / f"{assignment.module}.html",
                 fb.to_html(nb, f"Feedback: {assignment.module}, {outcome.student}"))


# ---------------------------------------------------------------- gradebook, journal, csv

class Gradebook:
    "The course's nbgrader gradebook, written by one thread; each submission is one transaction."

    def __init__(self, course: Path, module: str, notebook: str, course_id: str, manual: list = ()):
        from nbgrader.api import Gradebook as NbGradebook
        from tito.grading.release import prepare_nbgrader
        prepare_nbgrader()
        self.module, self.notebook, self.manual_cells = module, Path(notebook).stem, list(manual)
        self.gb = NbGradebook(f"sqlite:///{Path(course).resolve() / 'gradebook.db'}", course_id)

    def write(self, result: Result) -> None:
        if result.status == "missing":
            return  # nbgrader's notion too: nothing submitted, no submission row
        try:
            with warnings.catch_warnings():
                # nbgrader's own ORM code trips SQLAlchemy autoflush warnings on every new submission.
                warnings.simplefilter("ignore")
                self._write(result)
            self.gb.db.commit()
        except Exception:
            self.gb.db.rollback()
            raise

    def _write(self, result: Result) -> None:
        self.gb.update_or_create_student(result.student)
        self.gb.update_or_create_submission(self.module, result.student)
        # one query for the submission's grades (nbgrader's find_grade is a query per cell)
        grades = {grade.name: grade for grade in
                  self.gb.find_submission_notebook(self.notebook, self.module, result.student).grades}
        for gid, score in result.cells.items():
            grade = grades[gid]
            grade.auto_score = score
            grade.needs_manual_grade = grade.manual_score is not None   # as nbgrader's autograde marks it
        for gid, _ in self.manual_cells:   # a written answer waits for a person until one has scored it
            grade = grades[gid]
            blank = gid in result.blank_answers or result.status == "invalid"   # nothing to read: 0
            grade.auto_score = 0.0 if blank else None
            grade.needs_manual_grade = grade.manual_score is None and not blank

    def manual(self, student: str) -> Manual:
        "The points a person gave `student`'s written answers in nbgrader's formgrader, and what still waits."
        from nbgrader.api import MissingEntry
        given, waiting = [], []
        for gid, points in self.manual_cells:
            try:
                grade = self.gb.find_grade(gid, self.notebook, self.module, student)
            except MissingEntry:
                waiting.append(points)
                continue
            if grade.manual_score is None and grade.needs_manual_grade:
                waiting.append(points)
            else:   # a person's score, or 0 for an answer left blank (nbgrader's "No response")
                given.append(float(grade.manual_score if grade.manual_score is not None else grade.auto_score or 0.0))
        return Manual(score=round(sum(given), 2), pending=sum(waiting))

    def close(self) -> None:
        self.gb.close()


def journal_path(state: Path, student: str) -> Path:
    return state / "results" / f"{student}.json"


def load_journal(state: Path, student: str):
    path = journal_path(state, student)
    try:
        return Result(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_csv(path: Path, results: list, graded: list) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(term.COLUMNS + [gid for gid, _ in graded])
    for result in sorted(results, key=lambda r: r.student):
        writer.writerow(result.row(graded))
    atomic_write(path, buffer.getvalue())


def scan_feedback(out: Path, assignment: Assignment, submissions: list, scanned=frozenset(),
                  limits=None) -> dict:
    """{student: [problems]} of every feedback page under `out/feedback` (leaks, where a student's
    own text does not count; or a missing page), but those of `scanned`: pages this process
    scanned as it wrote them."""
    own = {sub.student: _own_text(sub, limits) for sub in submissions if sub.student not in scanned}
    problems = {}
    for student in sorted(own):
        page = out / "feedback" / student / f"{assignment.module}.html"
        if not page.exists():
            problems[student] = ["missing"]
            continue
        leaks = fb.find_leaks(page.read_text(encoding="utf-8"), assignment.secrets, own[student])
        if leaks:
            problems[student] = leaks
    return problems


def _own_text(sub: Submission, limits=None) -> str:
    "All the text of the student's cells ('' for a notebook that is not read or cannot be)."
    if sub.path is None or sub.refused:
        return ""
    try:
        if limits is not None and (sub.oversize(limits.max_notebook_mb) or intake.precheck(
                sub.path, sub.size(), limits.grader_memory_mb, limits.max_cells, limits.max_nesting)):
            return ""
        kw = dict(max_cells=limits.max_cells, max_nesting=limits.max_nesting) if limits is not None else {}
        return "\n".join(cell_text(c) for c in read_submission(sub.data(), **kw).cells)
    except (InvalidNotebook, OSError):
        return ""


# ---------------------------------------------------------------- the batch

@dataclass
class BatchReport:
    results: list
    graded_now: int
    reused: int
    csv_path: Path
    feedback_dir: Path
    sandbox: bool
    regrades: list = field(default_factory=list)   # term.Regrade of the students whose score moved
    regraded: int = 0                              # students regraded because the source changed


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


def grade_remote(job: tuple) -> tuple:
    """Grade one submission on a Dask worker: the job carries the student's bytes and the course's
    reference data, the worker grades into a scratch folder of its own, and sends back the result
    with every file it wrote (autograded notebook, feedback page) for the instructor's machine to
    write. Workers need tinytorch and bubblewrap, no shared file system."""
    student, file_name, problem, data, assignment, reference, limits, sandbox_note = job
    scratch = Path(tempfile.mkdtemp(prefix="tito-remote-"))
    try:
        path = None
        if data is not None:
            path = scratch / "submitted" / student / file_name
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
        out = scratch / "course"
        result = grade_one(Submission(student, path, problem), assignment, reference, limits, out, sandbox_note)
        files = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
        return result, files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _graded_on_cluster(todo, assignment, reference, limits, out, sandbox_note, scheduler):
    "Yield results graded on the Dask cluster at `scheduler`, writing each one's files into `out`."
    from tito.grading.distributed import map_on_cluster
    for sub in todo:
        if sub.refused or sub.oversize(limits.max_notebook_mb):   # refused without reading it: not shipped
            yield grade_one(sub, assignment, reference, limits, out, sandbox_note)
    jobs = [(sub.student, sub.path.name if sub.path else assignment.notebook, sub.problem, sub.data(),
             assignment, reference, limits, sandbox_note) for sub in todo
            if not sub.refused and not sub.oversize(limits.max_notebook_mb)]
    for _, (result, files) in map_on_cluster(grade_remote, jobs, scheduler):
        for relative, content in files.items():
            target = (out / relative).resolve()
            if out not in target.parents or not relative.startswith(("autograded/", "feedback/")):
                raise GradingError(f"a worker sent a file outside autograded/ and feedback/: {relative}")
            atomic_write(target, content, mode="wb")
        yield result


def sandbox_note_for(limits) -> str:
    "The note every grade carries without the sandbox (\"sandbox off\"); GradingError when it is on but cannot run."
    if not limits.sandbox:
        return "sandbox off"
    available, why = sandbox_available()
    if not available:
        raise GradingError(f"the grading sandbox cannot run here ({why}); install bubblewrap "
                           f"(scripts/setup.sh) or pass --no-sandbox to grade without it")
    return ""


def grade_batch(directory: Path, root: Path, out: Path, settings, limits, jobs: int = 1,
                progress: bool = True, module: str | None = None, scheduler: str | None = None,
                students: list | None = None, force: bool = False, submitted_at: dict | None = None,
                deadline=FROM_SETTINGS) -> BatchReport:
    """Grade every submission in `directory` into the course folder `out`. One grader at a time
    per course folder (another gets a GradingError saying so); a full disk ends the run with a
    plain GradingError (grades.csv stays whole, a rerun goes on where it stopped).
    `students`: only these (every other row stays as it was); `force`: regrade even unchanged
    submissions; `submitted_at`: {student: datetime} when no timestamp.txt says it; `deadline`: a
    DeadlinePolicy (or None for none) instead of settings.ini's [deadline]."""
    out = Path(out).resolve()
    intake.clean_stale_workdirs()
    try:
        with intake.course_lock(out / STATE):
            return _grade_batch(directory, root, out, settings, limits, jobs, progress, module, scheduler,
                                students, force, submitted_at, deadline)
    except intake.Busy as error:
        raise GradingError(str(error)) from None
    except Exception as error:
        if isinstance(error, intake.DiskFull) or intake.disk_full(error):
            raise GradingError(
                f"the disk holding {out} (or {tempfile.gettempdir()}) is full, so grading stopped: free some "
                "space and run `tito grade` again; it goes on where it stopped (every submission graded so "
                "far is kept in the journal; grades.csv was never left half-written)") from None
        raise


def _grade_batch(directory, root, out, settings, limits, jobs, progress, module, scheduler,
                 students=None, force=False, submitted_at=None, deadline=FROM_SETTINGS) -> BatchReport:
    module = module or settings.modules[0]
    notebook = settings.notebook(module)
    root = Path(root).resolve()
    sandbox_note = sandbox_note_for(limits)
    try:
        due = load_deadline(root) if deadline is FROM_SETTINGS else deadline
    except DeadlineError as error:
        raise GradingError(str(error)) from None
    prepare_course(out, root, module, settings)
    assignment = load_assignment(out, module, notebook)
    from tito.grading.policy import load_policy
    assignment.policy = load_policy(root)
    if limits.sandbox:   # forbidden modules are not there for the kernel
        limits = replace(limits, hidden_modules=assignment.policy.forbidden)
    state = out / STATE
    submissions = discover_submissions(directory, module, notebook, state, limits.max_notebook_mb)
    unknown = sorted(set(students or ()) - {sub.student for sub in submissions})
    if unknown:
        raise GradingError(f"--student {', '.join(unknown)}: no such submission in {directory} "
                           f"(students there: {', '.join(s.student for s in submissions[:8])}"
                           f"{', …' if len(submissions) > 8 else ''})")
    reference = reference_records(assignment, limits, state)
    load_misconceptions(assignment, out, state)
    by_student = {sub.student: sub for sub in submissions}

    results, todo, before = {}, [], {}
    for sub in submissions:
        try:
            digest = sub.digest()
        except OSError:
            digest = "unreadable"
        previous = load_journal(state, sub.student)
        selected = students is None or sub.student in students
        unchanged = previous is not None and previous.submission_hash == digest \
            and previous.source_hash == assignment.source_hash \
            and previous.graded_in_sandbox() == bool(limits.sandbox) \
            and previous.policy == assignment.policy.digest()
        if previous is not None and (not selected or (unchanged and not force)):
            results[sub.student] = previous
            previous.student_name, previous.lms_late = sub.student_name, sub.lms_late
        elif selected:
            todo.append(sub)
            if previous is not None and previous.source_hash != assignment.source_hash:
                before[sub.student] = previous   # the source changed: report whom it touched
    kept = [sub for sub in submissions if sub.student in results or sub in todo]
    reused = len(results)
    csv_path = out / "grades.csv"
    scanned = set()
    gradebook = Gradebook(out, module, notebook, settings.course_id, assignment.manual)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(kept), initial=reused, desc=f"grading {module}", unit="nb")
    def keep(result):
        result.student_name, result.lms_late = by_student[result.student].student_name, by_student[result.student].lms_late
        gradebook.write(result)
        atomic_write(journal_path(state, result.student), json.dumps(asdict(result)))
        results[result.student] = result
        if bar is not None:
            # e.g. "41 graded, 2 timeout, 1 invalid": a class-wide fault shows while the batch runs
            counts = {}
            for done in results.values():
                counts[done.status] = counts.get(done.status, 0) + 1
            bar.set_postfix_str(", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts), refresh=False)
            bar.update(1)

    try:
        if scheduler:
            for result in _graded_on_cluster(todo, assignment, reference, limits, out, sandbox_note, scheduler):
                keep(result)
        else:
            with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="grade") as pool:
                futures = {pool.submit(grade_one, sub, assignment, reference, limits, out, sandbox_note,
                                       scanned): sub for sub in todo}
                for future in as_completed(futures):
                    keep(future.result())  # GradingError (a broken course) stops the batch loudly
        if bar is not None:
            bar.close()
            bar = None
        # Pages reused from an earlier run (perhaps of another source), graded on a cluster, or
        # written for missing and unreadable notebooks are scanned now; the others were at writing.
        problems = scan_feedback(out, assignment, kept, scanned, limits)
        missing = [f"feedback/{student}/{assignment.module}.html: missing" for student, found in problems.items()
                   if found == ["missing"]]
        for student, leaks in problems.items():
            if leaks != ["missing"] and not results[student].withheld:
                withhold_feedback(out, assignment, results[student], leaks)
                atomic_write(journal_path(state, student), json.dumps(asdict(results[student])))
        final = [_with_term(results[sub.student], sub, assignment, due, submitted_at, gradebook) for sub in kept]
    finally:
        if bar is not None:
            bar.close()
        gradebook.close()
    write_csv(csv_path, final, assignment.graded)
    moved = term.regrades(before, {s: results[s] for s in before}, assignment.graded)
    if before:
        atomic_write(out / "regrades.csv", term.regrades_csv(moved))
    if missing:
        raise GradingError("feedback pages are missing:\n  " + "\n  ".join(missing[:40]))
    return BatchReport(final, len(todo), reused, csv_path, out / "feedback", limits.sandbox,
                       regrades=moved, regraded=len(before))


def load_misconceptions(assignment: Assignment, course: Path, state: Path) -> None:
    "The course's misconception library and what each variant prints (cached by the source's hash)."
    from tito.grading import misconceptions
    try:
        assignment.misconceptions = misconceptions.load(course, assignment.module)
        assignment.variants = misconceptions.cached_variant_records(assignment, assignment.misconceptions, state)
    except misconceptions.MisconceptionError as error:
        raise GradingError(str(error)) from None


def _with_term(result: Result, sub: Submission, assignment: Assignment, due, submitted_at, gradebook) -> Result:
    "The row grades.csv shows: written answers graded by hand added, the late penalty applied."
    ungraded = result.status in ("missing", "invalid")
    lateness, notes = None, []
    if due is not None and not ungraded:
        when, problem = timestamp_beside(sub.path)
        if when is None:
            when = (submitted_at or {}).get(sub.student)
        if problem and when is None:   # a bad timestamp.txt matters only when nothing else says when
            notes = [["deadline", problem]]
        lateness = due.assess(sub.student, when)
    manual = gradebook.manual(sub.student) if assignment.manual and not ungraded else None
    return term.finalise(result, lateness, manual, ungraded, notes)


def limits_for(settings, sandbox: bool, **overrides):
    limits = KernelLimits.from_settings(settings)
    changes = {k: v for k, v in overrides.items() if v is not None}
    changes["sandbox"] = sandbox
    return replace(limits, **changes)


def print_table(report: BatchReport, assignment_graded=None, file=None) -> None:
    "The class as a table: score (and, under a deadline, the penalty taken), status, the first reasons."
    late = any(r.late for r in report.results)
    rows = [(r.student, f"{points_text(r.score)}/{r.max_score:g}", r.status,
             (f"-{points_text(r.penalty)} {r.late}" if r.penalty else r.late) if late else "", r.detail)
            for r in report.results]
    width = max([len(r[0]) for r in rows] + [7])
    late_head = f"{'deadline':<16}  " if late else ""
    print(f"{'student':<{width}}  {'score':>11}  {'status':<8}  {late_head}detail", file=file)
    for student, score, status, deadline, detail in rows:
        late_cell = f"{deadline:<16}  " if late else ""
        print(f"{student:<{width}}  {score:>11}  {status:<8}  {late_cell}{short(detail, 110)}", file=file)
