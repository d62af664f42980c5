"""What a grading kernel may spend (`KernelLimits`), and whether the sandbox can run here."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path


class SandboxUnavailable(RuntimeError):
    "Raised when a sandboxed run is asked for on a machine where bubblewrap cannot run."


@dataclass(frozen=True)
class KernelLimits:
    cell_timeout: float = 60           # seconds per cell; then SIGINT, and a kernel that ignores it is killed
    submission_timeout: float = 300    # seconds for the whole notebook, kernel start included
    memory_mb: int = 4096              # address-space cap (RLIMIT_AS): a huge allocation is a MemoryError
    max_processes: int = 64            # RLIMIT_NPROC of the kernel's uid (threads count too)
    max_output_bytes: int = 1_000_000  # total bytes of output kept; the rest is cut with a note
    sandbox: bool = True
    max_notebook_mb: int = 64          # the grader reads no submitted file larger than this (not a kernel limit)
    # Without bubblewrap, a grader running as root still starts the kernel as this unprivileged uid
    # (setpriv): Gradescope's containers run everything as root and may not allow bubblewrap.
    unsandboxed_uid: int | None = None
    hidden_modules: tuple = ()         # modules a sandboxed kernel cannot import: the course's [policy]
    max_outputs: int = 2000            # outputs kept (each display() is one); the rest is cut with a note
    max_cells: int = 2000              # a submission with more cells is invalid (checked by the grader)
    max_nesting: int = 64              # ... or whose JSON nests deeper
    grader_memory_mb: int = 1024       # memory the grader may spend reading one large submission

    def __post_init__(self):
        for name in ("cell_timeout", "submission_timeout", "memory_mb", "max_processes", "max_output_bytes",
                     "max_notebook_mb", "max_outputs", "max_cells", "max_nesting", "grader_memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"KernelLimits.{name} must be a positive number, got {value!r}")

    @classmethod
    def from_settings(cls, settings) -> "KernelLimits":
        "The limits of `settings` (a `tito.settings.CourseSettings`)."
        return cls(cell_timeout=settings.cell_timeout, submission_timeout=settings.submission_timeout,
                   memory_mb=settings.memory_mb, max_processes=settings.max_processes,
                   max_output_bytes=settings.max_output_bytes, sandbox=settings.sandbox,
                   max_notebook_mb=settings.max_notebook_mb, max_outputs=settings.max_outputs,
                   max_cells=settings.max_cells, max_nesting=settings.max_nesting,
                   grader_memory_mb=settings.grader_memory_mb)


# ----------------------------------------------------------------------------------------------
# Is the sandbox usable here?

_availability: tuple | None = None
_availability_lock = threading.Lock()


def sandbox_available() -> tuple:
    "(True, '') when bubblewrap can start a confined process here, else (False, why not and what to do)."
    global _availability
    with _availability_lock:
        if _availability is None:
            _availability = _probe_sandbox()
        return _availability


def require_sandbox() -> None:
    "Raise `SandboxUnavailable` (saying why) unless bubblewrap can run here."
    usable, why = sandbox_available()
    if not usable:
        raise SandboxUnavailable(f"cannot run a sandboxed kernel: {why}")


def _probe_sandbox() -> tuple:
    missing = [tool for tool in ("bwrap", "setpriv", "prlimit") if shutil.which(tool) is None]
    if missing:
        return False, (f"{', '.join(missing)} not found on PATH (packages bubblewrap, util-linux): "
                       "run scripts/setup.sh, or grade with --no-sandbox")
    argv = [shutil.which("bwrap"), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr", *merged_usr_links(),
            "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"bubblewrap could not be started ({error}); grade with --no-sandbox to run unconfined"
    if run.returncode != 0:
        why = (run.stderr.strip().splitlines() or ["no message"])[-1]
        return False, (f"bubblewrap cannot create namespaces here ({why}); unprivileged user namespaces "
                       "may be disabled; grade with --no-sandbox to run unconfined")
    return True, ""


def merged_usr_links() -> list:
    "bwrap arguments recreating /bin, /lib, ... as the host has them (symlinks into /usr, or binds)."
    args = []
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args
