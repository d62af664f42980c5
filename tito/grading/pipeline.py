"""One submission through the grading stages, in the order `STAGES` lists them:

    read → restore → execute → score → report

Each stage is a small function of the `Grading` in flight (what the stages before it found) and
adds its part; a stage that finds the submission cannot be graded raises `Ungraded` with the
status and the reason, and the submission gets a zero with that reason and a page that says so.
The status is decided here: by `read` (missing, invalid) or from the kernel's outcome in `score`.
Nothing here renders text for a person but `detail`, from the notes (tito.grading.term).
"""
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tito.grading import intake, report
from tito.grading.model import STATUSES, Assignment, GradingError, Result, Submission
from tito.grading.notebooks import (InvalidNotebook, cell_text, content_hash, demo_cells, grade_id, is_graded,
                                    read_submission, restore_cells)
from tito.grading.sandbox import ExecutionResult, execute_notebook
from tito.grading.scoring import grade_cells, points_and_reasons, short
from tito.grading.term import render_detail


class Ungraded(Exception):
    "A stage's verdict: this submission cannot be graded (`status` missing or invalid, and why)."

    def __init__(self, status: str, why: str):
        super().__init__(why)
        self.status, self.why = status, why


@dataclass
class Grading:
    "One submission in flight: what it is graded against, and what each stage has found so far."
    sub: Submission
    assignment: Assignment
    reference: dict
    limits: object
    out: Path
    notes: list = field(default_factory=list)   # [kind, text]: every reason the row will give
    digest: str = ""              # sha256 of the submitted bytes       (read)
    data: bytes = b""             # the submitted bytes                 (read)
    submission: object = None     # the student's notebook, as read     (read)
    restored: object = None       # the notebook to run                 (restore)
    blank: list = field(default_factory=list)   # written answers left as released (restore)
    executed: ExecutionResult | None = None     # the kernel's outcome  (execute)
    scores: dict = field(default_factory=dict)  # {grade_id: CellScore} (score)
    outcome: Result | None = None               # the row               (score)


def read(g: Grading) -> None:
    "The student's bytes, refused without reading when they are not to be read, parsed with limits."
    sub, limits = g.sub, g.limits
    if sub.path is None:
        g.digest = "missing"
        raise Ungraded("missing", sub.problem)
    if sub.problem:
        g.notes.append(["submission", sub.problem])
    if sub.refused:
        g.digest = sub.digest()
        raise Ungraded("invalid", sub.refused)
    too_large = sub.oversize(limits.max_notebook_mb) or intake.precheck(
        sub.path, sub.size(), limits.grader_memory_mb, limits.max_cells, limits.max_nesting)
    if too_large:
        g.digest = sub.digest()
        raise Ungraded("invalid", too_large)
    g.data = sub.data()
    g.digest = content_hash(g.data)
    try:
        g.submission = read_submission(g.data, limits.max_cells, limits.max_nesting)
    except InvalidNotebook as error:
        raise Ungraded("invalid", str(error)) from None


def restore(g: Grading) -> None:
    "The instructor's locked and graded cells put back (deleted answers as the release's stubs)."
    g.restored, flags = restore_cells(g.submission, g.assignment.source, g.assignment.release)
    g.blank = blank_answers(g.submission, g.assignment)
    g.notes += [["restore", flag] for flag in flags]


def execute(g: Grading) -> None:
    """Run the restored notebook in a fresh kernel. Only the student's own bytes go beside it, in a
    private (0700) folder a sandboxed kernel reads through its own bind mount; the restored notebook
    stays in memory. Unchanged demo cells (plots, measurements) grade nothing, so they are not run."""
    workdir = intake.private_workdir()
    try:
        (workdir / g.assignment.notebook).write_bytes(g.data)
        os.chmod(workdir / g.assignment.notebook, 0o644)
        g.executed = execute_notebook(g.restored, workdir, g.limits, skip=demo_cells(g.restored, g.assignment.source))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def score(g: Grading) -> None:
    """Points per graded cell (a check scores only when its record matches the reference's), the
    misconception that explains a wrong record, the library-use policy, and the status."""
    assignment, result = g.assignment, g.executed
    g.scores = grade_cells(result.notebook, assignment.graded, g.reference)
    points, messages = points_and_reasons(g.scores)
    if assignment.variants:   # a wrong record a known misconception explains is named by it
        from tito.grading.misconceptions import name_them
        printed = {gid: cell.printed for gid, cell in g.scores.items()}
        for gid, explanations in name_them(printed, g.reference, assignment.variants, assignment.misconceptions).items():
            messages[gid] = explanations[:1] + messages.get(gid, [])
    findings, elsewhere = [], []
    if assignment.policy is not None:   # library use: a static scan, then on_use (tito.grading.policy)
        from tito.grading import policy as library
        findings = library.check_submission(g.submission, assignment, assignment.policy)
        points, messages = library.apply(findings, points, messages)
        elsewhere = [f"outside the graded functions the code uses {', '.join(f.names[:3])} (not scored)"
                     for f in findings if not f.function]
    status = "graded" if result.status == "ok" else result.status
    if status not in STATUSES:
        status = "crashed"
    if result.detail:
        g.notes.append(["execution", short(result.detail, 300)])
    if status in ("crashed", "timeout"):
        g.notes.append(["kept", kept_points(result, assignment.graded, points)])
    g.notes += [["cells", line] for line in _by_reason(messages)]
    g.notes += [["library", line] for line in elsewhere]
    g.outcome = Result(status=status, score=round(float(sum(points.values())), 2), detail=render_detail(g.notes),
                       cells=points, blank_answers=g.blank, messages=messages,
                       flags=[f.as_flag() for f in findings], submission_hash=g.digest, seconds=result.seconds,
                       kernel_cpu=result.kernel_cpu, notes=g.notes, **_row_basics(g))


def write_report(g: Grading) -> None:
    "The autograded notebook and the feedback page (withheld if it would show secret text)."
    points = g.outcome.cells
    # a cell the library-use policy zeroed lists no check marks: its message says why
    checks = {gid: cell.checks for gid, cell in g.scores.items() if points[gid] == cell.points}
    report.write_outputs(g.sub, g.assignment, g.executed.notebook, g.submission, points, g.outcome.messages,
                         g.outcome, g.out, checks=checks)


STAGES = (read, restore, execute, score, write_report)


def grade_one(sub: Submission, assignment: Assignment, reference: dict, limits, out: Path,
              sandbox_note: str = "", scanned: set | None = None) -> Result:
    """Grade one submission; writes its autograded notebook and feedback page. Never raises for
    student faults: a page that would leak secret text is withheld (the row says so); a bug of
    the grader's own costs only this submission (status crashed, the error named in `detail`, so
    the instructor sees it). A full disk raises DiskFull: no later submission could be written.
    The student's name is added to `scanned` once their page has been scanned for leaks and written."""
    g = Grading(sub, assignment, reference, limits, Path(out), notes=[["sandbox", sandbox_note]] if sandbox_note else [])
    try:
        return _through_the_stages(g, scanned)
    except (GradingError, intake.DiskFull):
        raise
    except Exception as error:  # noqa: BLE001 - one submission must never stop the class
        if intake.disk_full(error):
            raise intake.DiskFull(f"the disk is full ({type(error).__name__}: {short(str(error), 120)})") from error
        traceback.print_exc()
        why = f"internal grading error, tell the instructor: {type(error).__name__}: {short(str(error))}"
        try:   # a page that says so, so that the end-of-run scan finds every student's page
            return _ungraded(g, "crashed", [["internal", why]], digest="", notes=[])
        except Exception:  # noqa: BLE001 - the row is what matters
            traceback.print_exc()
            return _zero(g, "crashed", [["internal", why]], "", notes=[])


def _through_the_stages(g: Grading, scanned: set | None) -> Result:
    "Each stage in order; a stage's `Ungraded` verdict ends the run with a zero and a page that says why."
    try:
        for stage in STAGES:
            stage(g)
    except Ungraded as verdict:
        return _ungraded(g, verdict.status, [["submission", verdict.why]], digest=g.digest)
    if scanned is not None:
        scanned.add(g.sub.student)
    return g.outcome


def _row_basics(g: Grading) -> dict:
    "The fields every row of this submission has, whatever its status."
    policy = g.assignment.policy
    return dict(student=g.sub.student, max_score=g.assignment.max_score, source_hash=g.assignment.source_hash,
                policy=policy.digest() if policy is not None else "", sandboxed=bool(g.limits.sandbox))


def _zero(g: Grading, status: str, reasons: list, digest: str, notes: list | None = None) -> Result:
    notes = (g.notes if notes is None else notes) + reasons
    return Result(status=status, score=0.0, detail=render_detail(notes), cells={gid: 0.0 for gid, _ in g.assignment.graded},
                  submission_hash=digest, notes=notes, **_row_basics(g))


def _ungraded(g: Grading, status: str, reasons: list, digest: str, notes: list | None = None) -> Result:
    "A zero with its reasons, and a feedback page that says why (no autograded copy)."
    outcome = _zero(g, status, reasons, digest, notes)
    report.write_ungraded(g.sub, g.assignment, outcome, g.out)
    return outcome


def _by_reason(messages: dict) -> list:
    "Failing cells grouped by reason: 'reason [cell, cell]'."
    by_reason = {}
    for gid, reasons in messages.items():
        by_reason.setdefault(reasons[0], []).append(gid)
    return [f"{reason} [{', '.join(gids)}]" for reason, gids in by_reason.items()]


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
