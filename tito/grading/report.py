"""Stage "report": what a person reads. Per submission, the autograded notebook and the feedback
page (sanitised by tito.grading.feedback, scanned for secret text before it is written, withheld for
that student alone if it would show any); per class, grades.csv (written once, from the results)
and the table `tito grade` prints. Results are rendered into text here and nowhere before.
"""
import csv
import html
import io
import shutil
import sys
from pathlib import Path

import nbformat

from tito.grading import feedback as fb
from tito.grading import intake, term
from tito.grading.intake import atomic_write
from tito.grading.model import Assignment, Result, Submission, points_text
from tito.grading.notebooks import InvalidNotebook, cell_text, read_submission
from tito.grading.scoring import short


def page_path(out: Path, module: str, student: str) -> Path:
    "Where a student's feedback page is written: `out/feedback/<student>/<module>.html`."
    return Path(out) / "feedback" / student / f"{module}.html"


def _write_short_page(out: Path, module: str, student: str, markdown: str) -> None:
    "A feedback page of one markdown cell (no notebook to show), through the same exporter and sanitiser."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# Feedback: {module}, {student}\n\n{markdown}")])
    nb.cells[0]["id"] = "feedback-0"
    atomic_write(page_path(out, module, student), fb.to_html(nb, f"Feedback: {module}, {student}"))


def write_ungraded(sub, assignment, outcome, out: Path) -> None:
    "No notebook to run: no autograded copy, and a feedback page that says why."
    stale = out / "autograded" / sub.student / assignment.module
    if stale.exists():
        shutil.rmtree(stale)
    why = {"missing": "no notebook was found", "invalid": "the notebook could not be read"}.get(
        outcome.status, "the grader could not grade it")
    _write_short_page(out, assignment.module, sub.student,
                      f"**Score: 0 / {outcome.max_score:g}** (status: {outcome.status}): {why}.\n\n"
                      f"{html.escape(outcome.detail)}\n\n{provenance(outcome)}")


def provenance(outcome: Result) -> str:
    "The two hashes that reproduce a grade at an appeal: the submitted bytes and the course's tests."
    return (f"<small>submission sha256 <code>{outcome.submission_hash}</code> · "
            f"tests sha256 <code>{outcome.source_hash}</code></small>")


def page_header(assignment: Assignment, sub: Submission, outcome: Result) -> str:
    auto_max = sum(points for _, points in assignment.graded)
    lines = [f"# Feedback: {assignment.module}, {sub.student}", "",
             f"**Autograded: {points_text(outcome.score)} / {auto_max:g}** (status: {outcome.status})"]
    if assignment.manual:
        written = sum(points for _, points in assignment.manual)
        lines.append(f"Written answers ({len(assignment.manual)}, {written:g} points) are graded by hand; "
                     f"a late penalty, if any, is applied to the total in the course's grades.")
    return "\n".join(lines + ["", provenance(outcome)])


def write_outputs(sub, assignment, executed, submission, points, messages, outcome, out: Path,
                  checks: dict | None = None) -> None:
    autograded = out / "autograded" / sub.student / assignment.module / assignment.notebook
    atomic_write(autograded, nbformat.writes(executed))
    own = "\n".join(cell_text(c) for c in submission.cells)
    header = page_header(assignment, sub, outcome)
    page = fb.to_html(fb.feedback_notebook(executed, own, assignment.secrets, points, messages,
                                           assignment.graded, header, checks),
                      f"Feedback: {assignment.module}, {sub.student}")
    leaks = fb.find_leaks(page, assignment.secrets, own)
    if leaks:
        withhold_feedback(out, assignment, outcome, leaks)
        return
    atomic_write(page_path(out, assignment.module, sub.student), page)


def withhold_feedback(out: Path, assignment, outcome: Result, leaks: list) -> None:
    """A page that would show secret text costs its student only: it is replaced by a page saying
    it was withheld, the row is flagged, and the grader says so loudly (naming the lines on the
    instructor's terminal, never in grades.csv, which may reach students)."""
    print(f"WARNING: the feedback page of {outcome.student} would have shown secret text, so it is withheld "
          f"(review autograded/{outcome.student}/): {'; '.join(leaks[:5])}", file=sys.stderr, flush=True)
    outcome.withheld = True
    outcome.flag("withheld", f"feedback withheld for the instructor's review: the page would have shown "
                             f"{len(leaks)} line{'s' if len(leaks) != 1 else ''} of hidden or solution text")
    _write_short_page(out, assignment.module, outcome.student,
                      f"**Score: {outcome.score:g} / {outcome.max_score:g}** (status: {outcome.status}).\n\n"
                      "The detailed page is withheld until your instructor has reviewed it.")


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
    own = {sub.student: own_text(sub, limits) for sub in submissions if sub.student not in scanned}
    problems = {}
    for student in sorted(own):
        page = page_path(out, assignment.module, student)
        if not page.exists():
            problems[student] = ["missing"]
            continue
        leaks = fb.find_leaks(page.read_text(encoding="utf-8"), assignment.secrets, own[student])
        if leaks:
            problems[student] = leaks
    return problems


def own_text(sub: Submission, limits=None) -> str:
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


def print_table(report, assignment_graded=None, file=None) -> None:
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
