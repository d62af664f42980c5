"""Run one submitted notebook in a fresh, sandboxed, fault-tolerant kernel.

`execute_notebook(nb, workdir, limits)` runs every code cell of `nb` in order and always returns
an `ExecutionResult`; whatever the notebook does (loops, crashes, memory or fork bombs, floods of
output, daemons, signals to its parent) costs only that notebook, never the caller.

How a kernel is confined (`limits.sandbox`, needs bubblewrap; facts in
`../shared/recipes/sandboxed-kernel.md`):

    bwrap (as the grader) --unshare-pid/net/ipc/uts --die-with-parent --new-session --clearenv
          a root made only of /usr, the Python installation, the virtual environment and the
          student runtime (read-only); the kernel's connection folder (locked once the kernel
          has bound its sockets); /proc, /dev; and, in memory of a fixed size, a private /tmp
          (holding HOME and IPYTHONDIR), /dev/shm and the work folder, at its own path, with the
          files the grader put there bound read-only. Nothing the kernel writes reaches the disk.
      -- setpriv (drop to an unprivileged uid, no capabilities, no new privileges)
      -- prlimit (address space, processes, CPU time, file size, no core files)
      -- python -I student_runtime/_tinytorch_kernel.py -f <connection file>

bwrap runs first because the Python installation may live under a home folder that the
unprivileged uid cannot enter (here /root/.pyenv); bwrap mounts it before the uid is dropped.
Every kernel that runs at the same time gets its own uid from a small pool, because the process
cap (RLIMIT_NPROC) counts all processes of a uid: a fork bomb in one kernel must not starve
another. Dropping the uid needs root; run by another user (untested here), the kernel keeps that
user's uid inside a user namespace and its process cap is that user's current task count plus
`max_processes`, a headroom that parallel kernels share.

Output: the kernel stops forwarding printed text a little past `max_output_bytes` (a courtesy
that makes a flood cheap), and the grader keeps at most `max_output_bytes` (the guarantee). Its
sockets refuse any single message above 8 x `max_output_bytes` + 1 MiB, so the grader never holds
one; zmq then drops that connection for good, so the kernel is stopped as if it had crashed
("sent more than N bytes at once") and a new one goes on. Error outputs are always kept,
tracebacks cut.

Kernel messages are signed with a key the kernel holds, so student code can publish messages.
Requests carry random ids (jupyter_client numbers them, so a cell could predict the next one's),
and a cell ends when a second request, sent right after it, is answered: the kernel answers in
order, so a faked reply or end-of-output status does not end the cell early. Code that reads the
kernel's own sockets could still fake that answer too, and any cell's code (or a thread it left
running) can print anything into the cell that is running: the grader must compare recorded
values with its reference, never trust a printed or reported verdict alone.

Faults (see `execute_notebook`): a cell past `cell_timeout` is interrupted (SIGINT) and the
notebook goes on; a kernel that ignores the interrupt, or dies, is ended and a new kernel is
started, which re-runs the cells that had completed before (their new output is discarded) and
then goes on with the next cell, at most `MAX_RESTARTS` times; past `submission_timeout` the run
stops. Cells that never finished get an error output, so a grader cannot mistake an empty test
cell for a passing one. Before returning, the kernel's whole process tree is gone: the kernel is
pid 1's child in its own pid namespace, and killing pid 1 kills everything in it.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

__all__ = ["KernelLimits", "ExecutionResult", "SandboxUnavailable", "sandbox_available",
           "execute_notebook", "build_student_runtime", "student_runtime"]

MAX_RESTARTS = 2          # new kernels per submission after a crash or an ignored interrupt
KERNEL_START_TIMEOUT = 60  # seconds a kernel may take to answer its first request
TMPFS_BYTES = 256 * 2**20  # the kernel's private /tmp lives in memory: keep it small
SHM_BYTES = 64 * 2**20     # /dev/shm, for multiprocessing semaphores (joblib, scikit-learn)
WORKDIR_BYTES = 256 * 2**20  # the work folder a sandboxed kernel sees and writes is memory too
MAX_FILE_BYTES = 512 * 2**20
TRACEBACK_BYTES = 20_000   # an error output is always kept, but its traceback is cut to this
UID_BASE = 1_880_000_000   # pool of unprivileged uids, one per kernel running at the same time
UID_SLOTS = 512
KERNEL_OUTPUT_SLACK = 65536  # bytes
KERNEL_OUTPUT_COUNT_SLACK = 50  # outputs the kernel forwards past the count cap, so the grader sees the cut
OUTPUT_OVERHEAD = 200        # bytes counted for every output on top of its payload (dicts, metadata)  # the kernel forwards this much past the cap, so the grader sees the cut
SKIPPED_NOTE = "[not run by the grader: an unchanged demo cell, which grades nothing]\n"
IDLE_AFTER_REPLY = 2.0       # seconds to wait for the end of a cell's output once it has surely ended

# Files of the package a student's notebook may import; everything else (the solutions in
# core/spatial.py and core/im2col.py, the grading tools) stays out of the kernel's reach.
STUDENT_RUNTIME_FILES = (
    "__init__.py",
    "core/__init__.py", "core/tensor.py", "core/layers.py", "core/optim.py",
    "checks.py", "record.py",
)

_BOOT_NAME = "_tinytorch_kernel.py"
# This Python, as a plain absolute path: Python started as `../.venv/bin/python` reports
# "/here/../.venv/bin/python", and "/here" does not exist inside the sandbox. Not resolved:
# the venv's python is a link, and the venv is found through the link's own path.
_PYTHON = os.path.normpath(os.path.abspath(sys.executable))


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


def _probe_sandbox() -> tuple:
    missing = [tool for tool in ("bwrap", "setpriv", "prlimit") if shutil.which(tool) is None]
    if missing:
        return False, (f"{', '.join(missing)} not found on PATH (packages bubblewrap, util-linux): "
                       "run scripts/setup.sh, or grade with --no-sandbox")
    argv = [shutil.which("bwrap"), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr", *_merged_usr_links(),
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


def _merged_usr_links() -> list:
    "bwrap arguments recreating /bin, /lib, ... as the host has them (symlinks into /usr, or binds)."
    args = []
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


# ----------------------------------------------------------------------------------------------
# The student runtime: a copy of the parts of tinytorch a student's notebook may import.

_runtime_lock = threading.Lock()
_runtime_path: Path | None = None


def build_student_runtime(dest: Path, package_dir: Path | None = None) -> Path:
    "Copy the student-visible files of the `tinytorch` package (and the kernel's boot script) into `dest`."
    if package_dir is None:
        import tinytorch
        package_dir = Path(tinytorch.__file__).resolve().parent
    dest = Path(dest)
    for relative in STUDENT_RUNTIME_FILES:
        source = package_dir / relative
        if not source.is_file():
            raise FileNotFoundError(f"student runtime: {source} is missing (expected the exported package; "
                                    "run `tito export`)")
        target = dest / "tinytorch" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    shutil.copyfile(Path(__file__).with_name("kernel_boot.py"), dest / _BOOT_NAME)
    for path in [dest, *dest.rglob("*")]:
        # Read by the kernel's unprivileged uid, written by no one.
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return dest


def student_runtime() -> Path:
    "This process's student runtime, built on first use (removed when the process exits)."
    global _runtime_path
    with _runtime_lock:
        if _runtime_path is None or not (_runtime_path / _BOOT_NAME).exists():
            folder = Path(tempfile.mkdtemp(prefix="tinytorch-runtime-"))
            import atexit
            atexit.register(shutil.rmtree, folder, True)
            _runtime_path = build_student_runtime(folder)
            _prebuild_font_cache(_runtime_path / "mpl")
        return _runtime_path


def _prebuild_font_cache(folder: Path) -> None:
    """Give kernels matplotlib's font list, so that each copies it instead of scanning fonts (~1 s).

    The list is the grader's own (matplotlib builds it once per user and version); fonts it names
    that the sandbox cannot see make matplotlib rebuild its list, as it would anyway."""
    folder.mkdir(exist_ok=True)
    try:
        import matplotlib
        cache = Path(matplotlib.get_cachedir())
        if not list(cache.glob("fontlist-v*.json")):
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
        for fontlist in cache.glob("fontlist-v*.json"):
            shutil.copyfile(fontlist, folder / fontlist.name)
    except (ImportError, OSError, subprocess.TimeoutExpired):
        pass   # no matplotlib, or no cache: each kernel builds its own
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


# ----------------------------------------------------------------------------------------------
# Process bookkeeping through /proc.

def _proc_stat(pid: int):
    "(ppid, pid namespace id) of a live (not zombie) `pid`, or None."
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
        fields = text[text.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[1]), os.readlink(f"/proc/{pid}/ns/pid")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_seconds(pid) -> float:
    "CPU seconds `pid` and its reaped children have used (user + system), 0 when it is gone."
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
        fields = text[text.rindex(b")") + 2:].split()
        return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def _all_pids() -> list:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _children(pid: int) -> list:
    children = []
    for other in _all_pids():
        info = _proc_stat(other)
        if info and info[0] == pid:
            children.append(other)
    return children


def _tasks_of_uid(uid: int) -> int:
    "Threads of all processes whose real uid is `uid` (what RLIMIT_NPROC counts)."
    total = 0
    for pid in _all_pids():
        try:
            with open(f"/proc/{pid}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    return total


def _namespace_members(namespace: str) -> list:
    return [pid for pid in _all_pids() if (_proc_stat(pid) or (None, None))[1] == namespace]


def _ns_pid(pid: int):
    "The pid `pid` has inside its own pid namespace (last field of NSpid)."
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


_SIGNAL_NAMES = {signal.SIGSEGV: "segmentation fault", signal.SIGKILL: "killed",
                 signal.SIGABRT: "aborted", signal.SIGBUS: "bus error", signal.SIGFPE: "arithmetic error",
                 signal.SIGILL: "illegal instruction", signal.SIGXCPU: "CPU time limit",
                 signal.SIGXFSZ: "file size limit", signal.SIGTERM: "terminated"}


def _describe_exit(code) -> str:
    "Words for a kernel's exit status (bwrap reports a signal N as 128+N)."
    if code is None:
        return "the kernel stopped answering"
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        name = _SIGNAL_NAMES.get(number)
        if name is None:
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "unknown signal"
        return f"the kernel died (signal {number}, {name})"
    return f"the kernel exited (exit code {code})"


# ----------------------------------------------------------------------------------------------
# A pool of uids so that parallel kernels never share a process count.

class _UidSlot:
    "A uid of the pool, held (flock) until exit; None when not root or not sandboxed."

    def __init__(self, wanted: bool = True):
        self.wanted = wanted
        self.uid = None
        self._handle = None

    def __enter__(self):
        if os.geteuid() != 0 or not self.wanted:
            return self
        # One folder for every grader process on the machine (so TMPDIR must not split it), where
        # only root can write: nobody else may hold a slot or plant a link for root to follow.
        folder = Path("/run" if os.access("/run", os.W_OK) else "/tmp") / "tinytorch-sandbox-uids"
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise RuntimeError(f"{folder} must be a folder owned by root and writable by root only")
        for slot in range(UID_SLOTS):
            handle = os.fdopen(os.open(folder / f"slot-{slot}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self.uid, self._handle = UID_BASE + slot, handle
            return self
        raise RuntimeError(f"all {UID_SLOTS} sandbox uids are in use")

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.close()   # releases the lock


# ----------------------------------------------------------------------------------------------
# One kernel process.

class _Kernel:
    "A kernel in its own process (sandboxed or not), its client sockets, and the means to end it."

    def __init__(self, workdir: Path, limits: KernelLimits, uid, runtime: Path):
        import zmq
        from jupyter_client.channels import ZMQSocketChannel
        from jupyter_client.connect import write_connection_file
        from jupyter_client.session import Session

        self.limits = limits
        self.uid = uid
        self.runtime = runtime
        # The connection file and the IPC sockets, shared with the grader; short, because IPC
        # socket paths are limited to ~100 bytes. Unsandboxed, also the kernel's home and temp.
        self.folder = Path(tempfile.mkdtemp(prefix="ttk-"))
        if uid is not None:
            os.chown(self.folder, uid, uid)
        connection = self.folder / "kernel.json"
        write_connection_file(str(connection), transport="ipc", ip=str(self.folder / "ipc"),
                              key=secrets.token_hex(32).encode())
        if uid is not None:
            os.chown(connection, uid, uid)   # written 0600 by jupyter_client, for the kernel to read
        if not limits.sandbox:
            (self.folder / "tmp").mkdir()
            if uid is not None:
                os.chown(self.folder / "tmp", uid, uid)
        argv = self._argv(workdir, runtime, connection)
        self.process = subprocess.Popen(argv, cwd=str(workdir), env=self._env(limits.sandbox),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._log_tail = b""
        self._log_thread = threading.Thread(target=self._drain_log, daemon=True)
        self._log_thread.start()
        self.namespace = None   # pid namespace id, known once the kernel answers
        self.init_pid = None    # host pid of the namespace's pid 1 (bwrap's init)
        self.unconfined_pid = None  # unsandboxed: the kernel, child of the fork guard
        # Our own two sockets (no stdin, control or heartbeat): iopub refuses any message larger
        # than a few times the output cap, so one giant message cannot exhaust the grader's memory.
        info = json.loads(connection.read_text())
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self.context = zmq.Context()
        shell = self.context.socket(zmq.DEALER)
        iopub = self.context.socket(zmq.SUB)
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        # Both sockets refuse a message above a few times the output cap: a giant traceback must
        # not exhaust the grader's memory either (a cell whose reply is refused counts as failed).
        self.max_message = 8 * int(limits.max_output_bytes) + 2**20
        for socket in (shell, iopub):
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        # Room for every output the kernel forwards (it stops a little past the count cap), so that
        # none is dropped while this process is busy: the count cut does not depend on the load.
        iopub.setsockopt(zmq.RCVHWM, max(1000, int(limits.max_outputs) + KERNEL_OUTPUT_COUNT_SLACK + 200))
        for socket, port in ((shell, info["shell_port"]), (iopub, info["iopub_port"])):
            socket.linger = 0
            socket.connect(f"ipc://{info['ip']}-{port}")
        self.shell = ZMQSocketChannel(shell, self.session)
        self.iopub = ZMQSocketChannel(iopub, self.session)
        # Refusing a message drops the connection for good (zmq does not bring it back): the
        # monitors say so, and the kernel is then stopped like one that crashed.
        self.monitors = [socket.get_monitor_socket(zmq.EVENT_DISCONNECTED) for socket in (shell, iopub)]
        self.poller = zmq.Poller()
        for socket in (iopub, shell, *self.monitors):
            self.poller.register(socket, zmq.POLLIN)

    def _argv(self, workdir: Path, runtime: Path, connection: Path) -> list:
        limits = self.limits
        guard = [] if limits.sandbox else ["--fork-guard"]
        python = [_PYTHON, "-I", "-B", "-X", "frozen_modules=off", str(runtime / _BOOT_NAME), *guard,
                  "-f", str(connection), "--HistoryManager.enabled=False",
                  "--InteractiveShellApp.ignore_cwd=True", "--InteractiveShell.xmode=Plain"]
        prlimit = shutil.which("prlimit")
        limit_args = [f"--as={int(limits.memory_mb) * 2**20}", f"--cpu={int(limits.submission_timeout) + 10}",
                      f"--fsize={MAX_FILE_BYTES}", "--core=0"]
        if not limits.sandbox:
            if self.uid is not None:   # root without bubblewrap: at least another uid, and its process cap
                return [shutil.which("setpriv"), f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", prlimit, *limit_args,
                        f"--nproc={int(limits.max_processes) + _tasks_of_uid(self.uid)}", "--"] + python
            return ([prlimit, *limit_args, "--"] if prlimit else []) + python
        processes = int(limits.max_processes)
        if self.uid is None:
            # Not root, so no uid of its own: RLIMIT_NPROC counts every task of the grader's user,
            # so allow those that exist now on top (weaker: parallel kernels share the headroom).
            processes += _tasks_of_uid(os.getuid())
        limit_args.append(f"--nproc={processes}")
        argv = [shutil.which("bwrap"), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        for key, value in self._env(True).items():
            argv += ["--setenv", key, value]
        argv += ["--proc", "/proc", "--dev", "/dev",
                 # bwrap makes new folders 0700 root: the kernel's uid needs 1777 (tmp, shm) or 0755 (etc).
                 "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
                 "--ro-bind", "/usr", "/usr", *_merged_usr_links(), "--perms", "0755", "--dir", "/etc"]
        for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                     "/etc/nsswitch.conf", "/etc/fonts", "/etc/mime.types"):
            argv += ["--ro-bind-try", path, path]
        # `mounted`: bind mounts, whose whole subtree exists; `created`: folders that exist as
        # themselves only (a tmpfs like /tmp is empty: a venv or work folder below it needs every
        # ancestor created, traversable, or bwrap makes them 0700 root and the kernel cannot reach it).
        mounted = ["/usr"]
        created = {"/tmp", "/dev", "/dev/shm", "/proc", "/etc"}
        for path in (Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), runtime, self.folder):
            argv += _parent_dirs(path, mounted, created)
            mounted.append(str(path))
            argv += ["--bind" if path == self.folder else "--ro-bind", str(path), str(path)]
            if path == Path(sys.prefix).resolve():
                for hook in _editable_hooks():
                    argv += ["--ro-bind", "/dev/null", str(hook)]   # mask the instructor's editable install
        if limits.hidden_modules:
            # What the library-use policy forbids is not there for the kernel (tito.grading.policy).
            from tito.grading.policy import bwrap_hiding
            argv += bwrap_hiding(tuple(limits.hidden_modules))
        # The work folder the kernel sees is memory of a fixed size at the same path, holding the
        # files the grader put there (read-only): whatever it writes cannot fill the grader's disk,
        # and vanishes with the sandbox.
        work = Path(workdir).resolve()
        argv += _parent_dirs(work, mounted, created)
        argv += ["--perms", "1777", "--size", str(WORKDIR_BYTES), "--tmpfs", str(work)]
        for entry in sorted(work.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                argv += ["--ro-bind", str(entry), str(entry)]
        argv += ["--chdir", str(work)]
        wrapper = [shutil.which("prlimit"), *limit_args, "--"]
        if self.uid is not None:
            wrapper = [shutil.which("setpriv"), f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                       "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"] + wrapper
        return argv + ["--"] + wrapper + python

    def _env(self, sandbox: bool) -> dict:
        # Sandboxed, home lives in the kernel's own /tmp (memory, capped, gone afterwards).
        tmp = "/tmp" if sandbox else f"{self.folder}/tmp"
        home = f"{tmp}/home"
        env = {
            "PATH": os.pathsep.join([str(Path(_PYTHON).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": home, "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jupyter",
            "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter", "TMPDIR": tmp,
            "TINYTORCH_MPL_SEED": str(self.runtime / "mpl"),
            "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "TINYTORCH_OUTPUT_LIMIT": str(int(self.limits.max_output_bytes) + KERNEL_OUTPUT_SLACK),
            "TINYTORCH_OUTPUT_COUNT": str(int(self.limits.max_outputs) + KERNEL_OUTPUT_COUNT_SLACK),
        }
        return env

    def _drain_log(self):
        # The kernel process's own stdout/stderr (not the notebook's output): keep a short tail
        # for diagnosing a kernel that does not start; a flood is read and dropped.
        stream = self.process.stdout
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            self._log_tail = (self._log_tail + chunk)[-4000:]

    def log_tail(self) -> str:
        return self._log_tail.decode("utf-8", "replace").strip()

    def lock_folder(self):
        """Once the kernel has bound its sockets, take its shared folder back: student code must
        not be able to fill the grader's disk through it. (Not possible unless root: the kernel
        then runs as the grader's own user.)"""
        if self.uid is None:
            return
        for path in (self.folder / "kernel.json", self.folder):
            os.chown(path, os.geteuid(), os.getegid())
        os.chmod(self.folder, 0o755)

    def request(self, msg_type: str, content: dict) -> str:
        "Send a shell request; return its msg_id."
        # jupyter_client numbers msg_ids (session_pid_count): code in one cell could predict the
        # id of the next and publish output under it. A random id cannot be guessed.
        header = self.session.msg_header(msg_type)
        header["msg_id"] = secrets.token_hex(16)
        msg = self.session.msg(msg_type, content, header=header)
        self.shell.send(msg)
        return header["msg_id"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self):
        return self.process.poll()

    def learn_namespace(self):
        """Sandboxed: find the sandbox's pid 1 (bwrap's init, a child of the process we started) and
        its pid namespace. Unsandboxed: find the kernel (the child of the fork guard we started)."""
        if not self.limits.sandbox:
            if self.unconfined_pid is None:
                children = _children(self.process.pid)
                self.unconfined_pid = children[0] if children else None
            return
        if self.namespace is not None:
            return
        for child in _children(self.process.pid):
            info = _proc_stat(child)
            if info:
                self.init_pid, self.namespace = child, info[1]
                return

    def kernel_pid(self):
        "Host pid of the Python kernel (pid 2 of the sandbox), or of the process we started."
        if not self.limits.sandbox:
            self.learn_namespace()
            return self.unconfined_pid
        self.learn_namespace()
        if self.namespace is None:
            return None
        for pid in _namespace_members(self.namespace):
            if _ns_pid(pid) == 2:
                return pid
        return None

    def end_strays(self, rounds: int = 50):
        "SIGKILL every process of the sandbox except its init and the kernel (sandboxed kernels only)."
        kernel = self.kernel_pid() if self.limits.sandbox else None
        if kernel is None:
            return
        for _ in range(rounds):
            strays = [pid for pid in _namespace_members(self.namespace) if pid not in (self.init_pid, kernel)]
            if not strays:
                return
            for pid in strays:
                _kill(pid, signal.SIGKILL)

    def interrupt(self):
        """SIGINT to the kernel. Sandboxed, the kernel is first paused and every other process of the
        sandbox ended: processes the cell started (a fork bomb's copies spinning on the CPU) would
        keep the kernel from answering, and slow every later cell."""
        pid = self.kernel_pid()
        if pid is None:
            return
        if self.limits.sandbox:
            _kill(pid, signal.SIGSTOP)
            self.end_strays()
        _kill_main_thread(pid, signal.SIGINT)
        if self.limits.sandbox:
            _kill(pid, signal.SIGCONT)

    def stop(self):
        "End the kernel and every process it started; return once none is left. Sets `cpu_seconds`."
        self.cpu_seconds = _cpu_seconds(self.kernel_pid())
        for channel, monitor in zip((self.shell, self.iopub), self.monitors):
            try:
                channel.socket.disable_monitor()
            except Exception:
                pass
            monitor.close(linger=0)
            channel.close()
        try:
            self.context.destroy(linger=0)
        except Exception:
            pass
        if self.limits.sandbox:
            self.learn_namespace()
            if self.init_pid is not None:
                # pid 1 of a namespace dying takes every process of the namespace with it,
                # setsid daemons and double forks included; bwrap then reaps it and exits.
                _kill(self.init_pid, signal.SIGKILL)
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            _killpg(self.process.pid)
            self._reap()
            if self.namespace is not None:
                deadline = time.monotonic() + 10
                while _namespace_members(self.namespace) and time.monotonic() < deadline:
                    time.sleep(0.02)
        else:
            # Unconfined: kill the descendants we can find, then the process group.
            # A daemon that left the session and was re-parented is out of reach (documented).
            for pid in _descendants(self.process.pid) + _descendants(self.unconfined_pid or -1):
                _kill(pid, signal.SIGKILL)
            if self.unconfined_pid is not None:
                _kill(self.unconfined_pid, signal.SIGKILL)
            _killpg(self.process.pid)
            self._reap()
        self._log_thread.join(timeout=2)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _reap(self):
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _parent_dirs(path: Path, mounted: list, created: set) -> list:
    "bwrap `--dir`s, traversable by the kernel's uid, for the ancestors of `path` not yet in the sandbox."
    args = []
    for parent in reversed(path.parents):
        text = str(parent)
        inside_mount = any(text == m or text.startswith(m.rstrip("/") + "/") for m in mounted)
        if text == "/" or inside_mount or text in created:
            continue
        args += ["--perms", "0755", "--dir", text]
        created.add(text)
    return args


def _editable_hooks() -> list:
    "The .pth files of editable installs of tinytorch in this environment's site-packages."
    hooks = []
    import site
    for folder in site.getsitepackages() if hasattr(site, "getsitepackages") else []:
        folder = Path(folder)
        if folder.is_dir() and str(folder.resolve()).startswith(str(Path(sys.prefix).resolve())):
            hooks += [p.resolve() for p in folder.glob("__editable__*tinytorch*.pth")]
    return hooks


def _descendants(pid: int) -> list:
    parents = {}
    for other in _all_pids():
        info = _proc_stat(other)
        if info:
            parents.setdefault(info[0], []).append(other)
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "ppc64le": 250, "s390x": 241}.get(os.uname().machine)


def _kill_main_thread(pid: int, sig) -> None:
    """Signal the main thread of `pid` itself (tgkill). A process-directed signal may be taken by
    any thread: ipykernel's helper threads then set Python's flag while the main thread sleeps on
    (`time.sleep(10_000)` never interrupted), most often when the signal was pending over a
    SIGSTOP/SIGCONT. The main thread's id is the pid."""
    if _SYS_TGKILL is None:
        return _kill(pid, sig)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, pid, int(sig)) != 0 and ctypes.get_errno() not in (3, 1):  # ESRCH, EPERM
        _kill(pid, sig)


def _killpg(pid: int):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------
# Executing the notebook.

_CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?!\n)")
_BACKSPACE = re.compile(r"[^\n]\x08")


class _Stopped(Exception):
    "The kernel can go no further: it died, ignored an interrupt, or the submission ran out of time."

    def __init__(self, kind: str, words: str, final: bool = False, ename: str = ""):
        super().__init__(words)
        self.kind, self.words = kind, words
        self.ename = ename or ("CellTimeoutError" if kind == "timeout" else "DeadKernelError")
        self.final = final   # True: starting another kernel cannot help (no time left, kernel cannot start)


class _Run:
    def __init__(self, nb, workdir: Path, limits: KernelLimits):
        self.nb, self.workdir, self.limits = nb, workdir, limits
        self.started = time.monotonic()
        self.deadline = self.started + float(limits.submission_timeout)
        self.output_budget = int(limits.max_output_bytes)
        self.truncated = False
        self.outputs_left = int(limits.max_outputs)
        self.cut_by_count = False
        self.timed_out = []
        self.events = []          # (status, words)
        self.completed = []       # code cells that finished within their time, in order
        self.not_run = []
        self.restarts = 0
        self.kernel = None
        self.kernel_cpu = 0.0
        self.display_ids = {}     # display_id -> outputs showing it
        self.clear_pending = False  # clear_output(wait=True): clear when the next output comes

    # -- kernel life -------------------------------------------------------------------------
    def start_kernel(self, uid, runtime):
        self.kernel = _Kernel(self.workdir, self.limits, uid, runtime)
        deadline = min(self.deadline, time.monotonic() + KERNEL_START_TIMEOUT)
        while True:
            # A kernel_info reply on shell plus its status on iopub proves both channels are up
            # (a message published before iopub connects would be lost).
            msg_id = self.kernel.request("kernel_info_request", {})
            wait_until = min(deadline, time.monotonic() + 1.0)
            replied = published = False
            while time.monotonic() < wait_until and not (replied and published):
                for channel, msg in self._poll(0.05):
                    if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    if channel == "shell":
                        replied = True
                        # The kernel is up. If its status went out before our subscription
                        # reached it, it is lost: ask again soon rather than wait out the second.
                        wait_until = min(wait_until, time.monotonic() + 0.05)
                    elif msg["msg_type"] == "status":
                        published = True
                if not self.kernel.alive():
                    break
            if replied and published:
                self.kernel.learn_namespace()
                self.kernel.lock_folder()
                return
            if not self.kernel.alive():
                tail = self.kernel.log_tail().splitlines()
                raise _Stopped("crashed", "the grading kernel did not start (" +
                               (tail[-1] if tail else _describe_exit(self.kernel.exit_code())) + ")", final=True)
            if time.monotonic() >= deadline:
                if deadline == self.deadline:
                    raise _Stopped("timeout", "the submission's time ran out while its kernel was starting",
                                   final=True)
                raise _Stopped("crashed", f"the grading kernel did not start within {KERNEL_START_TIMEOUT} s",
                               final=True)

    def stop_kernel(self):
        self.kernel.stop()
        self.kernel_cpu += self.kernel.cpu_seconds
        self.kernel = None

    def _poll(self, timeout: float):
        "Messages ready within `timeout` seconds, as (channel name, message)."
        kernel = self.kernel
        ready = dict(kernel.poller.poll(max(0, int(timeout * 1000))))
        found = []
        for monitor in kernel.monitors:
            if monitor in ready:
                while monitor.poll(0):
                    monitor.recv_multipart()
                    found.append(("disconnected", None))
        for name, channel in (("iopub", kernel.iopub), ("shell", kernel.shell)):
            if channel.socket in ready:
                while channel.msg_ready():
                    try:
                        found.append((name, channel.get_msg(timeout=0)))
                    except Empty:
                        break
                    except Exception:
                        continue   # an unsigned or malformed message: ignore it
        return found

    # -- one cell ----------------------------------------------------------------------------
    def run_cell(self, index: int, cell, keep_output: bool = True) -> str:
        """Run one cell; return "ok", "error" or "timeout" (interrupted in time).

        Raises _Stopped when the kernel dies, ignores the interrupt or the submission's time is up.
        """
        limits = self.limits
        msg_id = self.kernel.request("execute_request", {
            "code": cell.source, "silent": False, "store_history": keep_output, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        # The kernel answers shell requests in order, so the answer to this second request says
        # the cell has ended, whatever the cell's own code publishes: it can sign messages, and
        # could fake its reply and end-of-output status. Requests carry random ids, so the cell
        # cannot know this one's id without reading the kernel's sockets (see the module notes).
        sync_id = self.kernel.request("kernel_info_request", {})
        cell_deadline = time.monotonic() + float(limits.cell_timeout)
        # time to answer an interrupt: IPython formats and sends a traceback first, slow on a busy machine
        grace = min(10.0, max(6.0, float(limits.cell_timeout) / 4))
        interrupted_at = None
        reply = idle = synced_at = None
        outputs = cell.outputs if keep_output else []
        self.clear_pending = False
        while True:
            now = time.monotonic()
            if synced_at is not None and (idle is not None or now >= synced_at + IDLE_AFTER_REPLY):
                break   # ended, and its output is complete (or its end-of-output status was lost)
            if synced_at is None:
                if now >= self.deadline:
                    raise _Stopped("timeout", f"the notebook ran past the {_seconds(limits.submission_timeout)} "
                                              f"limit for a whole submission in {self.name(index)}", final=True)
                if interrupted_at is None and now >= cell_deadline:
                    self.kernel.interrupt()
                    interrupted_at = now
                    if keep_output:
                        self.timed_out.append(index)
                if interrupted_at is not None:
                    self.kernel.end_strays()   # a fork bomb's copies must not starve the kernel's answer
                    if now >= interrupted_at + grace:
                        raise _Stopped("timeout", f"{self.name(index)} ran past the {_seconds(limits.cell_timeout)} "
                                                  "limit and did not stop when interrupted, so its kernel was stopped")
                limit = min(self.deadline, cell_deadline if interrupted_at is None else interrupted_at + grace)
            else:
                limit = synced_at + IDLE_AFTER_REPLY
            for channel, msg in self._poll(min(0.2, max(0.0, limit - now))):
                if channel == "disconnected":
                    self._lost_connection(index)
                parent = msg["parent_header"].get("msg_id")
                if channel == "shell" and parent == sync_id:
                    synced_at = synced_at or time.monotonic()
                elif parent != msg_id:
                    continue
                elif channel == "shell":
                    if msg["msg_type"] == "execute_reply":
                        # The last reply is the kernel's; an earlier one may be forged. Any reply
                        # saying "error" counts (a forged one can only cost the student).
                        if reply is None or reply["content"].get("status") != "error":
                            reply = msg
                elif msg["msg_type"] == "status":
                    if msg["content"].get("execution_state") == "idle" and synced_at is not None:
                        idle = msg   # only an idle after the sync answer is surely the kernel's
                    elif msg["content"].get("execution_state") == "idle":
                        idle = idle or msg
                elif keep_output:
                    self.handle_output(cell, outputs, msg)
            if synced_at is None and not self.kernel.alive():
                raise _Stopped("crashed", f"{_describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        if not self.kernel.alive():
            # The process we started died while the cell ran (unsandboxed: the fork guard, killed
            # through os.getppid()), even if its answers arrived first: a crash, whatever the timing.
            raise _Stopped("crashed", f"{_describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        if reply is None:   # ended (the kernel said so) without a reply: count it as failed
            reply = {"content": {"status": "error", "ename": "NoReply", "evalue": "the kernel sent no reply"}}
        failed = reply["content"].get("status") == "error"
        if keep_output:
            if failed and not any(out.get("output_type") == "error" for out in outputs):
                # The reply is the kernel's word that the cell failed, even when its error
                # output never arrived: a grader must not read a failing cell as passing.
                content = reply["content"]
                outputs.append(_error_output(str(content.get("ename", "Error"))[:200],
                                             str(content.get("evalue", ""))[:2000]))
            count = reply["content"].get("execution_count")
            cell.execution_count = count if isinstance(count, int) else None
            _tidy_streams(outputs)
        if interrupted_at is not None:
            self.kernel.end_strays()
            return "timeout"
        return "error" if failed else "ok"

    def _lost_connection(self, index: int):
        "A socket to the kernel dropped: the kernel died, or sent a message above the size cap."
        deadline = time.monotonic() + 1.0
        while self.kernel.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.kernel.alive():
            raise _Stopped("crashed", f"{_describe_exit(self.kernel.exit_code())} in {self.name(index)}")
        raise _Stopped("crashed", f"{self.name(index)} sent more than {self.kernel.max_message:,} bytes at once "
                                  "(output is capped), so its kernel was stopped", ename="OutputTooLarge")

    def handle_output(self, cell, outputs, msg):
        from nbformat.v4 import output_from_msg

        kind = msg["msg_type"]
        if kind == "clear_output":
            if msg["content"].get("wait"):
                self.clear_pending = True
            else:
                outputs.clear()
            return
        if kind == "update_display_data":
            display_id = msg["content"].get("transient", {}).get("display_id")
            for target in self.display_ids.get(display_id, []):
                size = _output_size(msg["content"])
                if size <= self.output_budget:
                    self.output_budget -= size
                    target["data"] = msg["content"].get("data", {})
                    target["metadata"] = msg["content"].get("metadata", {})
            return
        if kind not in ("stream", "display_data", "execute_result", "error"):
            return
        try:
            out = output_from_msg(msg)
        except (ValueError, KeyError):
            return
        if self.clear_pending:
            self.clear_pending = False
            outputs.clear()
        if kind == "error":
            # Always kept (a grader needs to see the cell failed), but bounded.
            out["traceback"] = _cut_traceback(out.get("traceback", []))
            out["evalue"] = str(out.get("evalue", ""))[:2000]
            outputs.append(out)
            return
        if self.truncated:
            return
        if self.outputs_left <= 0:
            outputs.append(_note(f"[output cut: this submission produced more than {int(self.limits.max_outputs):,} "
                                 "outputs; the rest was discarded]\n"))
            self.truncated = self.cut_by_count = True
            return
        self.outputs_left -= 1
        size = _output_size(out)
        if size > self.output_budget:
            if kind == "stream" and self.output_budget > 0:
                out["text"] = out["text"][:self.output_budget]
                self._append(outputs, out)
            outputs.append(_note(f"[output cut: this submission printed more than "
                                 f"{int(self.limits.max_output_bytes):,} bytes; the rest was discarded]\n"))
            self.output_budget = 0
            self.truncated = True
            return
        self.output_budget -= size
        self._append(outputs, out)
        display_id = msg["content"].get("transient", {}).get("display_id")
        if display_id:
            self.display_ids.setdefault(display_id, []).append(out)

    @staticmethod
    def _append(outputs, out):
        if (out["output_type"] == "stream" and outputs and outputs[-1]["output_type"] == "stream"
                and outputs[-1]["name"] == out["name"]):
            outputs[-1]["text"] += out["text"]
        else:
            outputs.append(out)

    def name(self, index: int) -> str:
        "How a student finds cell `index`: its position (counting from 1) and its grade id if it has one."
        grade_id = self.nb.cells[index].get("metadata", {}).get("nbgrader", {}).get("grade_id")
        return f"cell {index + 1}" + (f" ({grade_id})" if grade_id else "")

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _seconds(value) -> str:
    return f"{value:g} s"


def _note(text: str, name: str = "stderr"):
    from nbformat.v4 import new_output
    return new_output("stream", name=name, text=text)


def _error_output(ename: str, evalue: str):
    from nbformat.v4 import new_output
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _output_size(out) -> int:
    "Bytes an output costs: its payload and what the grader holds for each output besides."
    if "text" in out:
        return len(out["text"].encode("utf-8", "replace")) + OUTPUT_OVERHEAD
    total = OUTPUT_OVERHEAD
    for value in (out.get("data") or {}).values():
        total += len(value if isinstance(value, str) else json.dumps(value))
    return total


def _cut_traceback(lines: list) -> list:
    kept, size = [], 0
    for line in reversed([str(l) for l in lines]):
        if size + len(line) > TRACEBACK_BYTES:
            kept.append("[... traceback cut ...]")
            break
        kept.append(line)
        size += len(line)
    return list(reversed(kept))


def _tidy_streams(outputs):
    "Apply carriage returns and backspaces the way a terminal shows them (progress bars)."
    for out in outputs:
        if out["output_type"] == "stream" and ("\r" in out["text"] or "\x08" in out["text"]):
            text = _CARRIAGE_RETURN.sub("", out["text"])
            previous = None
            while previous != text:
                previous, text = text, _BACKSPACE.sub("", text)
            out["text"] = text


def _unsandboxed_uid(limits: KernelLimits):
    "The uid an unsandboxed kernel drops to: `limits.unsandboxed_uid` when the grader is root."
    return limits.unsandboxed_uid if limits.unsandboxed_uid is not None and os.geteuid() == 0 else None


def execute_notebook(nb, workdir: Path, limits: KernelLimits, skip=()) -> "ExecutionResult":
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
        usable, why = sandbox_available()
        if not usable:
            raise SandboxUnavailable(f"cannot run a sandboxed kernel: {why}")
    workdir = Path(workdir)
    if workdir.is_symlink() or not workdir.is_dir():
        raise ValueError(f"workdir must be an existing folder (not a link), got {workdir}")
    nb = copy.deepcopy(nb)
    code_cells = [i for i, cell in enumerate(nb.cells) if cell.get("cell_type") == "code"]
    for i in code_cells:
        nb.cells[i].outputs = []
        nb.cells[i].execution_count = None
    skip = set(skip)
    for i in skip & set(code_cells):
        nb.cells[i].outputs = [_note(SKIPPED_NOTE, name="stdout")]
    runnable = [i for i in code_cells if nb.cells[i].source.strip() and i not in skip]
    runtime = student_runtime()
    run = _Run(nb, workdir, limits)
    with _UidSlot(limits.sandbox) as slot:
        position = 0
        try:
            while position < len(runnable):
                try:
                    if run.kernel is None:
                        run.start_kernel(slot.uid if limits.sandbox else _unsandboxed_uid(limits), runtime)
                        for earlier in run.completed:
                            # A new kernel re-creates the state the finished cells had built;
                            # their output was kept from the first run.
                            if run.run_cell(earlier, nb.cells[earlier], keep_output=False) == "timeout":
                                raise _Stopped("timeout", f"re-running {run.name(earlier)} after a restart "
                                                          "ran out of time")
                    index = runnable[position]
                    outcome = run.run_cell(index, nb.cells[index])
                    if outcome == "timeout":
                        run.events.append(("timeout", f"{run.name(index)} ran past the "
                                                      f"{_seconds(limits.cell_timeout)} limit and was interrupted"))
                    else:
                        run.completed.append(index)
                    position += 1
                except _Stopped as stop:
                    index = runnable[position]
                    run.events.append((stop.kind, stop.words))
                    cell = nb.cells[index]
                    cell.outputs.append(_error_output(stop.ename, stop.words))
                    if run.kernel is not None:
                        run.stop_kernel()
                    position += 1
                    run.not_run.append(index)
                    if position >= len(runnable):
                        break
                    if stop.final or run.restarts >= MAX_RESTARTS or time.monotonic() >= run.deadline:
                        break
                    run.restarts += 1
                    run.events[-1] = (stop.kind, stop.words + "; a new kernel went on with the next cell")
            for index in runnable[position:]:
                run.not_run.append(index)
                nb.cells[index].outputs.append(_error_output(
                    "CellNotRun", "this cell did not run: the notebook was stopped before it"))
        finally:
            if run.kernel is not None:
                run.stop_kernel()
    for index in code_cells:
        for out in nb.cells[index].outputs:
            if out.get("output_type") == "error" and str(out.get("ename", "")).endswith("MemoryError"):
                run.events.append(("memory", f"{run.name(index)} ran out of memory "
                                             f"(the limit is {int(limits.memory_mb)} MB)"))
                break
    if run.not_run:
        skipped = [i for i in run.not_run if nb.cells[i].outputs[-1].get("ename") == "CellNotRun"]
        if skipped:
            run.events.append(("", f"{_cell_range(run, skipped)} did not run"))
    if run.cut_by_count:
        run.events.append(("", f"output cut after {int(limits.max_outputs):,} outputs"))
    elif run.truncated:
        run.events.append(("", f"output cut after {int(limits.max_output_bytes):,} bytes"))
    kinds = {kind for kind, _ in run.events}
    status = next((s for s in ("crashed", "memory", "timeout") if s in kinds), "ok")
    detail = "; ".join(words for _, words in run.events)
    return ExecutionResult(notebook=nb, status=status, detail=detail, seconds=run.seconds(),
                           timed_out_cells=sorted(set(run.timed_out)), not_run_cells=run.not_run,
                           output_truncated=run.truncated, restarts=run.restarts, kernel_cpu=run.kernel_cpu)


def _cell_range(run: _Run, indices: list) -> str:
    if len(indices) == 1:
        return run.name(indices[0])
    return f"cells {indices[0] + 1}–{indices[-1] + 1}"
