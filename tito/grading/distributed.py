"""Grading beyond one machine: the batch's submissions graded on a Dask distributed cluster.

Each task carries everything it needs (the submission's bytes, the course's reference data),
so workers need the `tinytorch` package and bubblewrap, not a shared file system. A worker that
dies mid-task is noticed by the scheduler, which runs its tasks again on another worker; the
results come back to the one process that writes the gradebook and grades.csv.
"""
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator


def map_on_cluster(function: Callable, items: Iterable, address: str, *,
                   connect_timeout: float = 30) -> Iterator[tuple]:
    """Yield `(index, function(item))` for every item, in the order the cluster finishes them.
    How often a task may lose its worker before it counts as failed is the scheduler's own
    setting (`distributed.scheduler.allowed-failures`, 3 by default), not the client's."""
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise RuntimeError("grading on a cluster needs Dask: pip install 'tinytorch[cluster]'") from error
    items = list(items)
    try:
        client = Client(address, timeout=connect_timeout)
    except (OSError, TimeoutError) as error:
        raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {error}") from error
    with client:
        futures = {client.submit(function, item, pure=False): index for index, item in enumerate(items)}
        for future in as_completed(futures):
            yield futures[future], future.result()


@dataclass(frozen=True)
class RemoteJob:
    "What a worker needs to grade one submission: the student's bytes and the course's reference data."
    student: str
    file_name: str           # the notebook's file name as handed in
    problem: str             # what the intake noticed (e.g. an unexpected file name), kept in the row
    data: bytes | None       # None: nothing was handed in
    assignment: object       # tito.grading.model.Assignment
    reference: dict
    limits: object           # tito.grading.sandbox.KernelLimits
    sandbox_note: str = ""


def grade_remote(job: RemoteJob) -> tuple:
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
        result = grade_one(Submission(job.student, path, job.problem), job.assignment, job.reference, job.limits,
                           out, job.sandbox_note)
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
    jobs = (RemoteJob(sub.student, sub.path.name if sub.path else assignment.notebook, sub.problem, sub.data(),
                      assignment, reference, limits, sandbox_note) for sub in shipped)
    for _, (result, files) in map_on_cluster(grade_remote, jobs, scheduler):
        write_files(out, files)
        yield result
