"""Grading the queue of `tito serve` with a bounded pool of threads, or on a Dask cluster.

Each thread takes the oldest queued attempt (of a student with nothing else being graded) and
grades it with `tito.grading.pipeline.grade_one`, the function `tito grade` uses per
submission: same sandbox, same limits, same scores, same feedback page. With a Dask scheduler, each attempt is graded on a worker (`grade_remote`, as
`tito grade --scheduler` does) and its files are written here.

Memory stays bounded by the pool: the queue lives in SQLite and the notebooks on disk, and a
thread holds one notebook at a time.
"""
import shutil
import sys
import threading
import traceback
from dataclasses import asdict
from pathlib import Path


from tito.grading.course import load_assignment, load_misconceptions, reference_records, sandbox_note_for
from tito.grading.distributed import RemoteCourse, RemoteJob, grade_remote, write_files
from tito.grading.model import STATE as GRADE_STATE, GradingError, Result, Submission
from tito.grading.pipeline import grade_one
from tito.grading.report import page_path, write_csv


class Course:
    "The assignment the service grades, with the reference records (cached in .tito-grade/, as tito grade does)."

    def __init__(self, root: Path, course: Path, settings, limits):
        self.root = Path(root)
        self.module = settings.modules[0]
        self.limits = limits
        self.sandbox_note = sandbox_note_for(limits)
        self.assignment = load_assignment(Path(root), self.module, settings.notebook(self.module))
        self.reference = reference_records(self.assignment, limits, Path(course) / GRADE_STATE)
        load_misconceptions(self.assignment, Path(root), Path(course) / GRADE_STATE)

    def feedback_page(self, attempt_dir: Path, student: str) -> Path:
        return page_path(attempt_dir, self.module, student)


class GraderPool:
    def __init__(self, store, course: Course, workers: int = 2, scheduler: str | None = None,
                 autostart: bool = True):
        "`autostart`: the web app starts the threads when it starts, and stops them when it stops."
        self.store, self.course, self.autostart = store, course, autostart
        self.workers, self.scheduler = max(1, int(workers)), scheduler
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.threads = []
        self._csv_lock = threading.Lock()
        self._client = None
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            print(f"tito serve: {recovered} attempt(s) left half-graded by an earlier run are queued again",
                  file=sys.stderr)
        self.write_grades()
        for index in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"serve-grade-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def notify(self) -> None:
        self.wake.set()

    def stop(self, timeout: float = 10) -> None:
        "Stop taking work; an attempt still grading after `timeout` is queued again at the next start."
        self.stop_event.set()
        self.wake.set()
        for thread in self.threads:
            thread.join(timeout)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                attempt = self.store.claim()
                if attempt is None:
                    self.wake.wait(0.5)
                    self.wake.clear()
                    continue
                self.grade(attempt)
                self.wake.set()   # the student's next attempt may be waiting for this one
            except Exception:  # noqa: BLE001 - e.g. the database busy for a minute: keep the thread, try again
                traceback.print_exc()
                self.stop_event.wait(1.0)

    # ------------------------------------------------------------ one attempt

    def grade(self, attempt: dict) -> None:
        out = self.store.attempt_dir(attempt["id"])
        if out.exists():
            shutil.rmtree(out)   # a half-graded attempt from before a restart
        sub = Submission(attempt["student"], self.store.blob_path(attempt["sha256"]))
        course = self.course
        try:
            if self.scheduler:
                result = self._grade_on_cluster(sub, out)
            else:
                result = grade_one(sub, course.assignment, course.reference, course.limits, out, course.sandbox_note)
        except GradingError as error:   # e.g. the page would leak hidden text: never shown
            print(f"tito serve: attempt {attempt['id']} of {attempt['student']}: {error}", file=sys.stderr)
            self.store.finish(attempt["id"], "failed", {"detail": f"the grader refused this attempt: {error}"})
            return
        except Exception as error:  # noqa: BLE001 - one attempt must never stop the service
            traceback.print_exc()
            self.store.finish(attempt["id"], "failed", {"detail": f"internal error: {type(error).__name__}: {error}"})
            return
        self.store.finish(attempt["id"], "done", asdict(result))
        self.write_grades()

    def _grade_on_cluster(self, sub: Submission, out: Path) -> Result:
        with self._client_lock:
            if self._client is None:
                from distributed import Client
                self._client = Client(self.scheduler, timeout=30)
        course = self.course
        job = RemoteJob(sub.student, course.assignment.notebook, "", sub.data())
        shared = RemoteCourse(course.assignment, course.reference, course.limits, course.sandbox_note)
        result, files = self._client.submit(grade_remote, job, shared, pure=False).result()
        write_files(out, files)
        return result

    # ------------------------------------------------------------ the class's grades

    @property
    def grades_path(self) -> Path:
        return self.store.state / "grades.csv"

    def write_grades(self) -> None:
        """grades.csv as `tito grade` writes it, of each student's latest graded attempt, under
        settings.ini's [deadline] with the time the service received the upload."""
        from tito.grading.deadline import load_policy, parse_time
        from tito.grading.term import finalise
        policy = load_policy(self.course.root)
        results = []
        for attempt in self.store.latest_graded():
            result = Result(**attempt["result"])
            lateness = None if policy is None else policy.assess(result.student, parse_time(attempt["received_at"]))
            results.append(finalise(result, lateness, None, ungraded=result.status in ("missing", "invalid")))
        with self._csv_lock:
            write_csv(self.grades_path, results, self.course.assignment.graded)
