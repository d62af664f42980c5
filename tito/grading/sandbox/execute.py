"""Cell execution: run a notebook's code cells in order in a kernel, attribute each output to its
cell, and survive what the cells do (timeouts, interrupts ignored, dead kernels, floods)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

from tito.grading.sandbox.kernel import _Kernel, _Stopped
from tito.grading.sandbox.launch import _UidSlot, kernel_uid
from tito.grading.sandbox.limits import KernelLimits, require_sandbox
from tito.grading.sandbox.outputs import _OutputCaps, error_output, note, tidy_streams
from tito.grading.sandbox.proc import describe_exit
from tito.grading.sandbox.runtime import student_runtime

MAX_RESTARTS = 2          # new kernels per submission after a crash or an ignored interrupt
SKIPPED_NOTE = "[not run by the grader: an unchanged demo cell, which grades nothing]\n"
IDLE_AFTER_REPLY = 2.0    # seconds to wait for the end of a cell's output once it has surely ended


@dataclass
class ExecutionResult:
    notebook: "object"      # nbformat.NotebookNode: the executed copy (outputs filled, as far as it got)
    status: str             # "ok" | "timeout" | "crashed" | "memory"
    detail: str             # one line for a student or instructor; "" when status is "ok"
    seconds: float
    timed_out_cells: list   # indices (into notebook.cells) of cells that ran past cell_timeout
    not_run_cells: list = field(default_factory=list)  # code cells that never finished (given an error output)
    output_truncated: bool = False
    restarts: int = 0
    kernel_cpu: float = 0.0   # CPU seconds the kernels used (their own and their reaped children's)


def execute_notebook(nb, workdir: Path, limits: KernelLimits, skip=()) -> ExecutionResult:
    """Run every code cell of (a copy of) `nb` in a fresh kernel whose working folder is `workdir`,
    except the cells whose indices are in `skip` (they get a note saying so, see `SKIPPED_NOTE`).

    Sandboxed, the kernel sees `workdir` with the files in it (read-only) and may write there,
    into memory capped at WORKDIR_BYTES: nothing it writes reaches the grader's `workdir`.

    Never raises for anything the notebook does; raises `SandboxUnavailable` when
    `limits.sandbox` is set and bubblewrap cannot run here, `ValueError` for a `workdir` that is
    not a folder. Outputs the submission brought with it are cleared first: a cell that does not
    finish keeps no stale output and gets an error output saying why.

    Status: "crashed" if a kernel died, else "memory" if a cell raised MemoryError, else
    "timeout" if a cell ran past `cell_timeout` or the notebook past `submission_timeout`, else
    "ok". `detail` lists every such event.
    """
    if limits.sandbox:
        require_sandbox()
    workdir = Path(workdir)
    if workdir.is_symlink() or not workdir.is_dir():
        raise ValueError(f"workdir must be an existing folder (not a link), got {workdir}")
    nb, code_cells, runnable = _fresh_copy(nb, set(skip))
    runtime = student_runtime()
    run = _Run(nb, workdir, limits)
    with _UidSlot(limits.sandbox) as slot:
        try:
            never_reached = run.run_cells(runnable, kernel_uid(limits, slot), runtime)
        finally:
            if run.kernel is not None:
                run.stop_kernel()
    for index in never_reached:
        run.not_run.append(index)
        nb.cells[index].outputs.append(error_output(
            "CellNotRun", "this cell did not run: the notebook was stopped before it"))
    run.note_outcomes(code_cells)
    kinds = {kind for kind, _ in run.events}
    status = next((s for s in ("crashed", "memory", "timeout") if s in kinds), "ok")
    return ExecutionResult(notebook=nb, status=status, detail="; ".join(words for _, words in run.events),
                           seconds=run.seconds(), timed_out_cells=sorted(set(run.timed_out)),
                           not_run_cells=run.not_run, output_truncated=run.caps.truncated,
                           restarts=run.restarts, kernel_cpu=run.kernel_cpu)


def _fresh_copy(nb, skip: set) -> tuple:
    """A copy of `nb` without the outputs it came with (skipped cells get the skip note), its code
    cells, and those that will run (not empty, not skipped)."""
    nb = copy.deepcopy(nb)
    code_cells = [i for i, cell in enumerate(nb.cells) if cell.get("cell_type") == "code"]
    for i in code_cells:
        nb.cells[i].outputs = [note(SKIPPED_NOTE, name="stdout")] if i in skip else []
        nb.cells[i].execution_count = None
    runnable = [i for i in code_cells if nb.cells[i].source.strip() and i not in skip]
    return nb, code_cells, runnable


@dataclass
class _CellProgress:
    "How far one running cell has got: what was asked, what has come back, and its deadlines."
    msg_id: str                    # the execute request
    sync_id: str                   # the request sent right after it: its answer means the cell ended
    deadline: float                # cell_timeout from now; then an interrupt
    grace: float                   # time to answer an interrupt
    interrupted_at: float | None = None
    reply: dict | None = None      # the cell's execute_reply
    idle: bool = False             # its end-of-output status came
    synced_at: float | None = None  # when the sync answer came

    def finished(self, now: float) -> bool:
        "Ended, and its output is complete (or its end-of-output status was lost)."
        return self.synced_at is not None and (self.idle or now >= self.synced_at + IDLE_AFTER_REPLY)

    def take_reply(self, msg: dict) -> None:
        # The last reply is the kernel's; an earlier one may be forged. Any reply saying "error"
        # counts (a forged one can only cost the student).
        if self.reply is None or self.reply["content"].get("status") != "error":
            self.reply = msg

    def outcome_content(self) -> dict:
        "The reply's content; a cell that ended (the kernel said so) without a reply counts as failed."
        if self.reply is None:
            return {"status": "error", "ename": "NoReply", "evalue": "the kernel sent no reply"}
        return self.reply["content"]


class _Run:
    "One submission's run: its kernels (one at a time), the cells that finished, and what happened."

    def __init__(self, nb, workdir: Path, limits: KernelLimits):
        self.nb, self.workdir, self.limits = nb, workdir, limits
        self.started = time.monotonic()
        self.deadline = self.started + float(limits.submission_timeout)
        self.caps = _OutputCaps(limits)
        self.timed_out = []
        self.events = []          # (status, words)
        self.completed = []       # code cells that finished within their time, in order
        self.not_run = []
        self.restarts = 0
        self.kernel = None
        self.kernel_cpu = 0.0

    # -- the cells, in order -----------------------------------------------------------------
    def run_cells(self, runnable: list, uid, runtime: Path) -> list:
        """Run the cells of `runnable` in order, a new kernel after a crash (at most MAX_RESTARTS);
        return the cells never reached."""
        for position, index in enumerate(runnable):
            try:
                if self.kernel is None:
                    self.start_kernel(uid, runtime)
                self.run_graded(index)
            except _Stopped as stop:
                self.stopped(index, stop)
                rest = runnable[position + 1:]
                if not rest:
                    return []
                if stop.final or self.restarts >= MAX_RESTARTS or time.monotonic() >= self.deadline:
                    return rest
                self.restarts += 1
                self.events[-1] = (stop.kind, stop.words + "; a new kernel went on with the next cell")
        return []

    def run_graded(self, index: int) -> None:
        "Run cell `index` keeping its output; a timeout is an event, anything else completes it."
        if self.run_cell(index, self.nb.cells[index]) == "timeout":
            self.events.append(("timeout", f"{self.name(index)} ran past the "
                                           f"{_seconds(self.limits.cell_timeout)} limit and was interrupted"))
        else:
            self.completed.append(index)

    def stopped(self, index: int, stop: _Stopped) -> None:
        "Cell `index` could not finish: say why in its outputs and the events, and end its kernel."
        self.events.append((stop.kind, stop.words))
        self.nb.cells[index].outputs.append(error_output(stop.ename, stop.words))
        if self.kernel is not None:
            self.stop_kernel()
        self.not_run.append(index)

    def note_outcomes(self, code_cells: list) -> None:
        "Add the events read off the finished notebook: memory errors, cells not run, output cut."
        nb, limits = self.nb, self.limits
        for index in code_cells:
            if any(out.get("output_type") == "error" and str(out.get("ename", "")).endswith("MemoryError")
                   for out in nb.cells[index].outputs):
                self.events.append(("memory", f"{self.name(index)} ran out of memory "
                                              f"(the limit is {int(limits.memory_mb)} MB)"))
        skipped = [i for i in self.not_run if nb.cells[i].outputs[-1].get("ename") == "CellNotRun"]
        if skipped:
            self.events.append(("", f"{self._cell_range(skipped)} did not run"))
        if self.caps.cut_by_count:
            self.events.append(("", f"output cut after {int(limits.max_outputs):,} outputs"))
        elif self.caps.truncated:
            self.events.append(("", f"output cut after {int(limits.max_output_bytes):,} bytes"))

    # -- kernel life -------------------------------------------------------------------------
    def start_kernel(self, uid, runtime: Path):
        "A new kernel, with the state the finished cells had built (their output was kept from the first run)."
        self.kernel = _Kernel(self.workdir, self.limits, uid, runtime)
        self.kernel.wait_ready(self.deadline)
        for earlier in self.completed:
            if self.run_cell(earlier, self.nb.cells[earlier], keep_output=False) == "timeout":
                raise _Stopped("timeout", f"re-running {self.name(earlier)} after a restart ran out of time")

    def stop_kernel(self):
        self.kernel.stop()
        self.kernel_cpu += self.kernel.cpu_seconds
        self.kernel = None

    # -- one cell ----------------------------------------------------------------------------
    def run_cell(self, index: int, cell, keep_output: bool = True) -> str:
        """Run one cell; return "ok", "error" or "timeout" (interrupted in time).

        Raises _Stopped when the kernel dies, ignores the interrupt or the submission's time is up.
        """
        progress = self._send(cell, keep_output)
        outputs = cell.outputs if keep_output else []
        self.caps.start_cell()
        while not progress.finished(time.monotonic()):
            until = self._watch(index, progress, keep_output)
            for channel, msg in self.kernel.poll(min(0.2, max(0.0, until - time.monotonic()))):
                self._take(index, progress, channel, msg, outputs if keep_output else None)
            if progress.synced_at is None and not self.kernel.alive():
                raise _Stopped("crashed", f"{describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        if not self.kernel.alive():
            # The process we started died while the cell ran (unsandboxed: the fork guard, killed
            # through os.getppid()), even if its answers arrived first: a crash, whatever the timing.
            raise _Stopped("crashed", f"{describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        content = progress.outcome_content()
        failed = content.get("status") == "error"
        if keep_output:
            self._finish_outputs(cell, content, failed)
        if progress.interrupted_at is not None:
            self.kernel.end_strays()
            return "timeout"
        return "error" if failed else "ok"

    def _send(self, cell, keep_output: bool) -> _CellProgress:
        msg_id = self.kernel.request("execute_request", {
            "code": cell.source, "silent": False, "store_history": keep_output, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        # The kernel answers shell requests in order, so the answer to this second request says
        # the cell has ended, whatever the cell's own code publishes: it can sign messages, and
        # could fake its reply and end-of-output status. Requests carry random ids, so the cell
        # cannot know this one's id without reading the kernel's sockets (see the package notes).
        sync_id = self.kernel.request("kernel_info_request", {})
        timeout = float(self.limits.cell_timeout)
        # time to answer an interrupt: IPython formats and sends a traceback first, slow on a busy machine
        return _CellProgress(msg_id, sync_id, deadline=time.monotonic() + timeout,
                             grace=min(10.0, max(6.0, timeout / 4)))

    def _watch(self, index: int, progress: _CellProgress, keep_output: bool) -> float:
        """Enforce the deadlines of a running cell (interrupt it, or give up on its kernel); return
        until when to wait for messages."""
        now = time.monotonic()
        if progress.synced_at is not None:
            return progress.synced_at + IDLE_AFTER_REPLY
        limits = self.limits
        if now >= self.deadline:
            raise _Stopped("timeout", f"the notebook ran past the {_seconds(limits.submission_timeout)} "
                                      f"limit for a whole submission in {self.name(index)}", final=True)
        if progress.interrupted_at is None and now >= progress.deadline:
            self.kernel.interrupt()
            progress.interrupted_at = now
            if keep_output:
                self.timed_out.append(index)
        if progress.interrupted_at is None:
            return min(self.deadline, progress.deadline)
        # a fork bomb's copies must not starve the kernel's answer; the kernel may still be forking,
        # so a few rounds only: the grace period below must not wait on them
        self.kernel.end_strays(seconds=0.05)
        if now >= progress.interrupted_at + progress.grace:
            raise _Stopped("timeout", f"{self.name(index)} ran past the {_seconds(limits.cell_timeout)} "
                                      "limit and did not stop when interrupted, so its kernel was stopped")
        return min(self.deadline, progress.interrupted_at + progress.grace)

    def _take(self, index: int, progress: _CellProgress, channel: str, msg, outputs) -> None:
        "One message from the kernel: the sync answer, the cell's reply or status, or an output (kept in `outputs`)."
        if channel == "disconnected":
            self._lost_connection(index)
        parent = msg["parent_header"].get("msg_id")
        if channel == "shell" and parent == progress.sync_id:
            progress.synced_at = progress.synced_at or time.monotonic()
        elif parent != progress.msg_id:
            return   # an earlier cell's late message, or a forged one
        elif channel == "shell":
            if msg["msg_type"] == "execute_reply":
                progress.take_reply(msg)
        elif msg["msg_type"] == "status":
            progress.idle = progress.idle or msg["content"].get("execution_state") == "idle"
        elif outputs is not None:
            self.caps.take(outputs, msg)

    def _finish_outputs(self, cell, content: dict, failed: bool) -> None:
        outputs = cell.outputs
        if failed and not any(out.get("output_type") == "error" for out in outputs):
            # The reply is the kernel's word that the cell failed, even when its error
            # output never arrived: a grader must not read a failing cell as passing.
            outputs.append(error_output(str(content.get("ename", "Error"))[:200],
                                        str(content.get("evalue", ""))[:2000]))
        count = content.get("execution_count")
        cell.execution_count = count if isinstance(count, int) else None
        tidy_streams(outputs)

    def _lost_connection(self, index: int):
        "A socket to the kernel dropped: the kernel died, or sent a message above the size cap."
        deadline = time.monotonic() + 1.0
        while self.kernel.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.kernel.alive():
            raise _Stopped("crashed", f"{describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        raise _Stopped("crashed", f"{self.name(index)} sent more than {self.kernel.max_message:,} bytes at once "
                                  "(output is capped), so its kernel was stopped", ename="OutputTooLarge")

    # -- words -------------------------------------------------------------------------------
    def name(self, index: int) -> str:
        "How a student finds cell `index`: its position (counting from 1) and its grade id if it has one."
        grade_id = self.nb.cells[index].get("metadata", {}).get("nbgrader", {}).get("grade_id")
        return f"cell {index + 1}" + (f" ({grade_id})" if grade_id else "")

    def _cell_range(self, indices: list) -> str:
        if len(indices) == 1:
            return self.name(indices[0])
        return f"cells {indices[0] + 1}–{indices[-1] + 1}"

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _seconds(value) -> str:
    return f"{value:g} s"
