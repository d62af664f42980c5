"""One kernel: its process (sandboxed or not, `launch`) and its channel, started and ended together."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from tito.grading.sandbox import proc
from tito.grading.sandbox.channel import KernelChannel, write_connection_file
from tito.grading.sandbox.launch import kernel_process

KERNEL_START_TIMEOUT = 60  # seconds a kernel may take to answer its first request


class _Stopped(Exception):
    "The kernel can go no further: it died, ignored an interrupt, or the submission ran out of time."

    def __init__(self, kind: str, words: str, final: bool = False, ename: str = ""):
        super().__init__(words)
        self.kind, self.words = kind, words
        self.ename = ename or ("CellTimeoutError" if kind == "timeout" else "DeadKernelError")
        self.final = final   # True: starting another kernel cannot help (no time left, kernel cannot start)


class _Kernel:
    "A kernel in its own process, its client sockets, and the means to end it."

    def __init__(self, workdir: Path, limits, uid, runtime: Path):
        self.uid = uid
        # The connection file and the IPC sockets, shared with the grader; short, because IPC
        # socket paths are limited to ~100 bytes. Unsandboxed, also the kernel's home and temp.
        self.folder = Path(tempfile.mkdtemp(prefix="ttk-"))
        if uid is not None:
            os.chown(self.folder, uid, uid)
        connection = write_connection_file(self.folder, uid)
        self.process = kernel_process(limits, uid, runtime, self.folder)
        self.process.start(workdir, connection)
        self.channel = KernelChannel(connection, limits)
        self.max_message = self.channel.max_message
        self.cpu_seconds = 0.0

    # What a run asks of a kernel, whichever kind of process it is.
    def request(self, msg_type: str, content: dict) -> str:
        return self.channel.request(msg_type, content)

    def poll(self, timeout: float) -> list:
        return self.channel.poll(timeout)

    def alive(self) -> bool:
        return self.process.alive()

    def exit_code(self):
        return self.process.exit_code()

    def interrupt(self) -> None:
        self.process.interrupt()

    def end_strays(self, seconds: float = 5.0) -> None:
        self.process.end_strays(seconds)

    def wait_ready(self, submission_deadline: float) -> None:
        """Return once the kernel answers on both channels; raise `_Stopped` (final) if it dies,
        does not start within KERNEL_START_TIMEOUT, or the submission's time runs out first."""
        deadline = min(submission_deadline, time.monotonic() + KERNEL_START_TIMEOUT)
        while True:
            if self._answers_kernel_info(deadline):
                self.process.find_kernel()
                self._lock_folder()
                return
            if not self.alive():
                tail = self.process.log_tail().splitlines()
                raise _Stopped("crashed", "the grading kernel did not start (" +
                               (tail[-1] if tail else proc.describe_exit(self.exit_code())) + ")", final=True)
            if time.monotonic() >= deadline:
                if deadline == submission_deadline:
                    raise _Stopped("timeout", "the submission's time ran out while its kernel was starting",
                                   final=True)
                raise _Stopped("crashed", f"the grading kernel did not start within {KERNEL_START_TIMEOUT} s",
                               final=True)

    def _answers_kernel_info(self, deadline: float) -> bool:
        "Ask once: a kernel_info reply on shell plus its status on iopub prove both channels are up."
        # (A message published before iopub connects would be lost.)
        msg_id = self.request("kernel_info_request", {})
        wait_until = min(deadline, time.monotonic() + 1.0)
        replied = published = False
        while time.monotonic() < wait_until and not (replied and published):
            for channel, msg in self.poll(0.05):
                if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if channel == "shell":
                    replied = True
                    # The kernel is up. If its status went out before our subscription
                    # reached it, it is lost: ask again soon rather than wait out the second.
                    wait_until = min(wait_until, time.monotonic() + 0.05)
                elif msg["msg_type"] == "status":
                    published = True
            if not self.alive():
                break
        return replied and published

    def _lock_folder(self):
        """Once the kernel has bound its sockets, take its shared folder back: student code must
        not be able to fill the grader's disk through it. (Not possible unless root: the kernel
        then runs as the grader's own user.)"""
        if self.uid is None:
            return
        for path in (self.folder / "kernel.json", self.folder):
            os.chown(path, os.geteuid(), os.getegid())
        os.chmod(self.folder, 0o755)

    def stop(self):
        "End the kernel and every process it started; return once none is left. Sets `cpu_seconds`."
        self.cpu_seconds = proc.cpu_seconds(self.process.kernel_pid())
        self.channel.close()
        self.process.end()
        shutil.rmtree(self.folder, ignore_errors=True)
