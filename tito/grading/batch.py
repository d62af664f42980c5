"""`tito grade DIR`: a whole class through the stages (tito.grading.pipeline), one kernel each.

    set up the course → plan (what the journal already holds) → grade (threads, or a Dask
    cluster) → keep (gradebook, then journal) → finish (scan every page, the term, grades.csv)

The main thread is the only writer of the gradebook, the journal and grades.csv. Results are kept
in batches: the gradebook commits, then their journal entries are written, so an entry always
means its row is in gradebook.db. A rerun skips what the journal holds for the same bytes and the
same source, and regrades anything changed. grades.csv is written once, from the results.
"""
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from tito.grading import intake, journal, report, term
from tito.grading.course import (load_assignment, load_misconceptions, prepare_course, reference_records,
                                 sandbox_note_for)
from tito.grading.deadline import DeadlineError, load_policy as load_deadline, timestamp_beside
from tito.grading.find import discover_submissions
from tito.grading.gradebook import Gradebook
from tito.grading.model import STATE, STATUSES, Assignment, GradingError, Result, Submission
from tito.grading.pipeline import grade_one

FROM_SETTINGS = object()       # grade_batch(deadline=...): read settings.ini's [deadline]
# When results are committed (gradebook, then journal): a result a kernel ran for is kept at once
# (its commit is a few per cent of its grading); results that cost nothing (unreadable, missing,
# refused files) wait for the next commit, at most this long or this many, so that a class of them
# costs one fsync per batch instead of one per student.
COMMIT_SECONDS = 1.0
COMMIT_EVERY = 250


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


@dataclass
class Plan:
    "Which submissions a run grades, and which journaled results it keeps."
    kept: list                 # the submissions grades.csv will list, in order
    todo: list                 # those to grade now
    results: dict              # {student: Result} reused from the journal
    before: dict               # {student: Result} of an earlier source: whom a changed source touched


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
    plan = plan_batch(submissions, state, assignment, bool(limits.sandbox), students, force)

    gradebook = Gradebook(out, module, notebook, settings.course_id, assignment.manual)
    keeper = Keeper(gradebook, state, plan, {sub.student: sub for sub in submissions},
                    progress and f"grading {module}")
    scanned = set()
    try:
        if scheduler:
            from tito.grading.distributed import graded_on_cluster
            graded = graded_on_cluster(plan.todo, assignment, reference, limits, out, sandbox_note, scheduler)
        else:
            graded = _graded_here(plan.todo, assignment, reference, limits, out, sandbox_note, scanned, jobs)
        try:
            for result in graded:   # GradingError (a broken course) stops the batch loudly
                keeper.keep(result)
        finally:   # what was graded before a stop is kept (a failing gradebook raises its own error)
            keeper.flush()
        keeper.close_bar()
        missing = _scan_unscanned_pages(out, assignment, plan, keeper.results, scanned, limits, state)
        final = [_with_term(keeper.results[sub.student], sub, assignment, due, submitted_at, gradebook)
                 for sub in plan.kept]
    finally:
        keeper.close_bar()
        gradebook.close()
    csv_path = out / "grades.csv"
    report.write_csv(csv_path, final, assignment.graded)
    moved = term.regrades(plan.before, {s: keeper.results[s] for s in plan.before}, assignment.graded)
    if plan.before:
        intake.atomic_write(out / "regrades.csv", term.regrades_csv(moved))
    if missing:
        raise GradingError("feedback pages are missing:\n  " + "\n  ".join(missing[:40]))
    return BatchReport(final, len(plan.todo), len(plan.results), csv_path, out / "feedback", limits.sandbox,
                       regrades=moved, regraded=len(plan.before))


def plan_batch(submissions: list, state: Path, assignment: Assignment, sandboxed: bool,
               students: list | None, force: bool) -> Plan:
    "Reuse what the journal holds for unchanged submissions (and for every student not selected)."
    results, todo, before = {}, [], {}
    for sub in submissions:
        try:
            digest = sub.digest()
        except OSError:
            digest = "unreadable"
        previous = journal.load(state, sub.student)
        selected = students is None or sub.student in students
        unchanged = previous is not None and journal.reusable(previous, digest, assignment, sandboxed)
        if previous is not None and (not selected or (unchanged and not force)):
            results[sub.student] = previous
            previous.student_name, previous.lms_late = sub.student_name, sub.lms_late
        elif selected:
            todo.append(sub)
            if previous is not None and previous.source_hash != assignment.source_hash:
                before[sub.student] = previous   # the source changed: report whom it touched
    kept = [sub for sub in submissions if sub.student in results or sub in todo]
    return Plan(kept, todo, results, before)


def _graded_here(todo, assignment, reference, limits, out, sandbox_note, scanned, jobs):
    "Yield results graded by `jobs` threads on this machine, as they finish."
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="grade") as pool:
        futures = [pool.submit(grade_one, sub, assignment, reference, limits, out, sandbox_note, scanned)
                   for sub in todo]
        for future in as_completed(futures):
            yield future.result()


class Keeper:
    """Keeps each result as it comes: its gradebook row staged, committed in batches, then the
    batch's journal entries written; the progress bar counts statuses as they come."""

    def __init__(self, gradebook: Gradebook, state: Path, plan: Plan, by_student: dict, progress):
        self.gradebook, self.state, self.by_student = gradebook, state, by_student
        self.results = dict(plan.results)
        self.counts = Counter(result.status for result in plan.results.values())
        self.pending, self.last_commit = [], time.monotonic()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=len(plan.kept), initial=len(plan.results), desc=progress, unit="nb")

    def keep(self, result: Result) -> None:
        sub = self.by_student[result.student]
        result.student_name, result.lms_late = sub.student_name, sub.lms_late
        try:
            self.gradebook.write(result)
        except Exception:   # the gradebook rolled back what was staged: none of it may be journaled
            self.pending = []
            raise
        self.pending.append(result)
        self.results[result.student] = result   # a student graded now was not reused (plan_batch)
        self.counts[result.status] += 1
        if result.seconds > 0 or len(self.pending) >= COMMIT_EVERY \
                or time.monotonic() - self.last_commit >= COMMIT_SECONDS:
            self.flush()
        if self.bar is not None:
            # e.g. "41 graded, 2 timeout, 1 invalid": a class-wide fault shows while the batch runs
            self.bar.set_postfix_str(", ".join(f"{self.counts[s]} {s}" for s in STATUSES if self.counts[s] > 0),
                                     refresh=False)
            self.bar.update(1)

    def flush(self) -> None:
        "Commit the staged rows, then journal them: an entry always means its row is in the gradebook."
        self.gradebook.commit()
        for result in self.pending:
            journal.save(self.state, result)
        self.pending, self.last_commit = [], time.monotonic()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _scan_unscanned_pages(out, assignment, plan, results, scanned, limits, state) -> list:
    """Pages reused from an earlier run (perhaps of another source), graded on a cluster, or written
    for missing and unreadable notebooks are scanned now (the others were scanned as they were
    written); a leaking one is withheld. Returns the pages that are missing."""
    problems = report.scan_feedback(out, assignment, plan.kept, scanned, limits)
    missing = [f"feedback/{student}/{assignment.module}.html: missing" for student, found in problems.items()
               if found == ["missing"]]
    for student, leaks in problems.items():
        if leaks != ["missing"] and not results[student].withheld:
            report.withhold_feedback(out, assignment, results[student], leaks)
            journal.save(state, results[student])
    return missing


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
