"""Grading beyond one machine: the batch's submissions graded on a Dask distributed cluster.

Each task carries the submission's bytes, and the course's reference data go to the cluster once
per batch, so workers need the `tinytorch` package and bubblewrap, not a shared file system. A worker that
dies mid-task is noticed by the scheduler, which runs its tasks again on another worker; the
results come back to the one process that writes the gradebook and grades.csv.
"""
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator


def map_on_cluster(function: Callable, items: Iterable, address: str, *, shared=None,
                   connect_timeout: float = 30, window: int = 64) -> Iterator[tuple]:
    """Yield `(index, function(item[, shared]))` for every item, in the order the cluster finishes
    them. `shared` (the course's data, the same for every item) goes to the cluster once, as the
    result of a task of its own (so the scheduler can make it again if its worker dies), not once
    per item; at most `window` items are in flight, so memory does not grow with the class.
    How often a task may lose its worker before it counts as failed is the scheduler's own
    setting (`distributed.scheduler.allowed-failures`, 3 by default), not the client's."""
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise RuntimeError("grading on a cluster needs Dask: pip install 'tinytorch[cluster]'") from error
    try:
        client = Client(address, timeout=connect_timeout)
    except (OSError, TimeoutError) as error:
        raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {error}") from error
    with client:
        extra = () if shared is None else (client.submit(_same, shared, pure=False),)
        pending, running, index_of = iter(enumerate(items)), as_completed(), {}

        def submit_next() -> None:
            for index, item in pending:   # at most one
                future = client.submit(function, item, *extra, pure=False)
                index_of[future] = index
                running.add(future)
                return

        for _ in range(max(1, window)):
            submit_next()
        for future in running:
            yield index_of.pop(future), future.result()
            submit_next()


def _same(value):
    return value


@dataclass(frozen=True)
class RemoteJob:
    "One submission for a worker: the student's bytes."
    student: str
    file_name: str           # the notebook's file name as handed in
    problem: str             # what the intake noticed (e.g. an unexpected file name), kept in the row
    data: bytes | None       # None: nothing was handed in


@dataclass(frozen=True)
class RemoteCourse:
    "What every job of a batch is graded against; sent to the cluster once per batch."
    assignment: object       # tito.grading.model.Assignment
    reference: dict
    limits: object           # tito.grading.sandbox.KernelLimits
    sandbox_note: str = ""


def grade_remote(job: RemoteJob, course: RemoteCourse) -> tuple:
    """Grade one submission on a Dask worker, into a scratch folder of its own, and send back the
    result with every file it wrote (autograded notebook, feedback page) for the instructor's
    machine to write. Workers need tinytorch and bubblewrap, no shared file system."""
    from tito.grading.model import Submission
    from tito.grading.pipeline import grade_one
    scratch = Path(tempfile.mkdtemp(prefix="tito-remote-"))
    try:
        path = None
        if job.data is not None:
            path = scratch / "submitted" / job.student / job.file_name
            path.parent.mkdir(parents=True)
            path.write_bytes(job.data)
        out = scratch / "course"
        result = grade_one(Submission(job.student, path, job.problem), course.assignment, course.reference,
                           course.limits, out, course.sandbox_note)
        files = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
        return result, files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_files(out: Path, files: dict) -> None:
    "Write what a worker sent back into the course folder `out`: its autograded/ and feedback/ files only."
    from tito.grading.intake import atomic_write
    from tito.grading.model import GradingError
    out = Path(out).resolve()
    for relative, content in files.items():
        target = (out / relative).resolve()
        if out not in target.parents or not relative.startswith(("autograded/", "feedback/")):
            raise GradingError(f"a worker sent a file outside autograded/ and feedback/: {relative}")
        atomic_write(target, content, mode="wb")


def graded_on_cluster(todo, assignment, reference, limits, out, sandbox_note, scheduler):
    "Yield results graded on the Dask cluster at `scheduler`, writing each one's files into `out`."
    from tito.grading.pipeline import grade_one
    shipped = []
    for sub in todo:
        if sub.refused or sub.oversize(limits.max_notebook_mb):   # refused without reading it: not shipped
            yield grade_one(sub, assignment, reference, limits, out, sandbox_note)
        else:
            shipped.append(sub)
    jobs = (RemoteJob(sub.student, sub.path.name if sub.path else assignment.notebook, sub.problem, sub.data())
            for sub in shipped)   # read as they are sent, a window at a time
    course = RemoteCourse(assignment, reference, limits, sandbox_note)
    for _, (result, files) in map_on_cluster(grade_remote, jobs, scheduler, shared=course):
        write_files(out, files)
        yield result
