"""How a kernel's process is started, found, interrupted and ended: two kinds, chosen once.

`kernel_process(limits, ...)` gives a `SandboxedKernel` (bubblewrap, a pid namespace of its own,
`setpriv` to a uid of the pool, `prlimit`) or an `UnconfinedKernel` (`prlimit`, a fork guard, and
`setpriv` to `limits.unsandboxed_uid` when the grader is root). Both have the same interface; the
rest of the sandbox never asks which one it holds. The uid pool (`_UidSlot`) is here too."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from tito.grading.sandbox import proc
from tito.grading.sandbox.limits import merged_usr_links
from tito.grading.sandbox.runtime import BOOT_NAME, FONT_FOLDER

TMPFS_BYTES = 256 * 2**20  # the kernel's private /tmp lives in memory: keep it small
SHM_BYTES = 64 * 2**20     # /dev/shm, for multiprocessing semaphores (joblib, scikit-learn)
WORKDIR_BYTES = 256 * 2**20  # the work folder a sandboxed kernel sees and writes is memory too
MAX_FILE_BYTES = 512 * 2**20
UID_BASE = 1_880_000_000   # pool of unprivileged uids, one per kernel running at the same time
UID_SLOTS = 512
KERNEL_OUTPUT_SLACK = 65536  # bytes the kernel forwards past the cap, so the grader sees the cut
KERNEL_OUTPUT_COUNT_SLACK = 50  # outputs the kernel forwards past the count cap, so the grader sees the cut

# This Python, as a plain absolute path: Python started as `../.venv/bin/python` reports
# "/here/../.venv/bin/python", and "/here" does not exist inside the sandbox. Not resolved:
# the venv's python is a link, and the venv is found through the link's own path.
_PYTHON = os.path.normpath(os.path.abspath(sys.executable))


def kernel_process(limits, uid, runtime: Path, folder: Path) -> "KernelProcess":
    "The kind of kernel process `limits` asks for (not started yet)."
    kind = SandboxedKernel if limits.sandbox else UnconfinedKernel
    return kind(limits, uid, runtime, folder)


def unsandboxed_uid(limits):
    "The uid an unsandboxed kernel drops to: `limits.unsandboxed_uid` when the grader is root."
    return limits.unsandboxed_uid if limits.unsandboxed_uid is not None and os.geteuid() == 0 else None


class KernelProcess:
    """One kernel's process tree. `folder` is the kernel's connection folder (shared with the
    grader); `uid` the unprivileged uid it drops to, or None to keep the grader's."""

    tmp: str             # the kernel's temp folder (its HOME lives below)
    boot_args: tuple = ()

    def __init__(self, limits, uid, runtime: Path, folder: Path):
        self.limits, self.uid, self.runtime, self.folder = limits, uid, Path(runtime), Path(folder)
        self.process = None
        self._log_tail = b""

    # -- the command -------------------------------------------------------------------------
    def argv(self, workdir: Path, connection: Path) -> list:
        raise NotImplementedError

    def python_argv(self, connection: Path) -> list:
        return [_PYTHON, "-I", "-B", "-X", "frozen_modules=off", str(self.runtime / BOOT_NAME), *self.boot_args,
                "-f", str(connection), "--HistoryManager.enabled=False",
                "--InteractiveShellApp.ignore_cwd=True", "--InteractiveShell.xmode=Plain"]

    def limit_args(self, processes: int | None) -> list:
        "prlimit's arguments: address space, CPU time, file size, no core files, and `processes` tasks if given."
        limits = self.limits
        args = [f"--as={int(limits.memory_mb) * 2**20}", f"--cpu={int(limits.submission_timeout) + 10}",
                f"--fsize={MAX_FILE_BYTES}", "--core=0"]
        return args + ([f"--nproc={processes}"] if processes is not None else [])

    def drop_uid(self) -> list:
        "setpriv's command dropping to `self.uid` with no capabilities (nothing when uid is None)."
        if self.uid is None:
            return []
        return [shutil.which("setpriv"), f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]

    def env(self) -> dict:
        home = f"{self.tmp}/home"
        return {
            "PATH": os.pathsep.join([str(Path(_PYTHON).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": home, "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jupyter",
            "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter", "TMPDIR": self.tmp,
            "TINYTORCH_MPL_SEED": str(self.runtime / FONT_FOLDER),
            "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "TINYTORCH_OUTPUT_LIMIT": str(int(self.limits.max_output_bytes) + KERNEL_OUTPUT_SLACK),
            "TINYTORCH_OUTPUT_COUNT": str(int(self.limits.max_outputs) + KERNEL_OUTPUT_COUNT_SLACK),
        }

    # -- the process -------------------------------------------------------------------------
    def prepare(self) -> None:
        "Create what the kernel needs in its folder before it starts (nothing by default)."

    def start(self, workdir: Path, connection: Path) -> None:
        self.prepare()
        self.process = subprocess.Popen(self.argv(workdir, connection), cwd=str(workdir), env=self.env(),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._log_thread = threading.Thread(target=self._drain_log, daemon=True)
        self._log_thread.start()

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

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self):
        return self.process.poll()

    # -- the tree ----------------------------------------------------------------------------
    def find_kernel(self) -> None:
        "Learn, once the kernel answers, where its Python process is."
        raise NotImplementedError

    def kernel_pid(self):
        "Host pid of the Python kernel, or None."
        raise NotImplementedError

    def end_strays(self, seconds: float = 5.0) -> None:
        "End every process the cells started that can be told apart from the kernel (if any), within about `seconds`."

    def interrupt(self) -> None:
        "SIGINT to the kernel's main thread."
        pid = self.kernel_pid()
        if pid is not None:
            proc.kill_main_thread(pid, signal.SIGINT)

    def end(self) -> None:
        "End the kernel and every process it started that can be reached; return once they are gone."
        raise NotImplementedError

    def _reap(self):
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log_thread.join(timeout=2)


class SandboxedKernel(KernelProcess):
    """bwrap (pid, net, ipc, uts namespaces; a root of read-only binds and memory) -- setpriv --
    prlimit -- python. bwrap's init is pid 1 of the namespace, the kernel pid 2; ending pid 1 ends
    everything in the namespace."""

    tmp = "/tmp"   # the kernel's own /tmp: memory, capped, gone afterwards

    def __init__(self, *args):
        super().__init__(*args)
        self.namespace = None   # pid namespace id, known once the kernel answers
        self.init_pid = None    # host pid of the namespace's pid 1 (bwrap's init)

    def argv(self, workdir: Path, connection: Path) -> list:
        processes = int(self.limits.max_processes)
        if self.uid is None:
            # Not root, so no uid of its own: RLIMIT_NPROC counts every task of the grader's user,
            # so allow those that exist now on top (weaker: parallel kernels share the headroom).
            processes += proc.tasks_of_uid(os.getuid())
        argv = [shutil.which("bwrap"), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        for key, value in self.env().items():
            argv += ["--setenv", key, value]
        argv += self._root(workdir)
        return (argv + ["--"] + self.drop_uid() + [shutil.which("prlimit"), *self.limit_args(processes), "--"]
                + self.python_argv(connection))

    def _root(self, workdir: Path) -> list:
        "bwrap's arguments building the kernel's file system, ending in its work folder."
        argv = ["--proc", "/proc", "--dev", "/dev",
                # bwrap makes new folders 0700 root: the kernel's uid needs 1777 (tmp, shm) or 0755 (etc).
                "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
                "--ro-bind", "/usr", "/usr", *merged_usr_links(), "--perms", "0755", "--dir", "/etc"]
        for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                     "/etc/nsswitch.conf", "/etc/fonts", "/etc/mime.types"):
            argv += ["--ro-bind-try", path, path]
        # `mounted`: bind mounts, whose whole subtree exists; `created`: folders that exist as
        # themselves only (a tmpfs like /tmp is empty: a venv or work folder below it needs every
        # ancestor created, traversable, or bwrap makes them 0700 root and the kernel cannot reach it).
        mounted = ["/usr"]
        created = {"/tmp", "/dev", "/dev/shm", "/proc", "/etc"}
        for path in (Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), self.runtime, self.folder):
            argv += _parent_dirs(path, mounted, created)
            mounted.append(str(path))
            argv += ["--bind" if path == self.folder else "--ro-bind", str(path), str(path)]
            if path == Path(sys.prefix).resolve():
                for hook in _editable_hooks():
                    argv += ["--ro-bind", "/dev/null", str(hook)]   # mask the instructor's editable install
        if self.limits.hidden_modules:
            # What the library-use policy forbids is not there for the kernel (tito.grading.policy).
            from tito.grading.policy import bwrap_hiding
            argv += bwrap_hiding(tuple(self.limits.hidden_modules))
        # The work folder the kernel sees is memory of a fixed size at the same path, holding the
        # files the grader put there (read-only): whatever it writes cannot fill the grader's disk,
        # and vanishes with the sandbox.
        work = Path(workdir).resolve()
        argv += _parent_dirs(work, mounted, created)
        argv += ["--perms", "1777", "--size", str(WORKDIR_BYTES), "--tmpfs", str(work)]
        for entry in sorted(work.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                argv += ["--ro-bind", str(entry), str(entry)]
        return argv + ["--chdir", str(work)]

    def find_kernel(self):
        "The sandbox's pid 1 (bwrap's init, a child of the process we started) and its pid namespace."
        if self.namespace is not None:
            return
        for child in proc.children(self.process.pid):
            namespace = proc.namespace_of(child)
            if namespace:
                self.init_pid, self.namespace = child, namespace
                return

    def kernel_pid(self):
        "Host pid of the Python kernel: pid 2 of the sandbox."
        self.find_kernel()
        if self.namespace is None:
            return None
        return next((pid for pid in proc.namespace_members(self.namespace) if proc.ns_pid(pid) == 2), None)

    def end_strays(self, seconds: float = 5.0):
        """SIGKILL every process of the sandbox except its init and the kernel, until none is left
        alive (a fork bomb's copies fork while they are being killed; on a loaded machine that takes
        more rounds than on an idle one), for at most `seconds`."""
        kernel = self.kernel_pid()
        if kernel is None:
            return
        deadline = time.monotonic() + seconds
        while True:
            strays = [pid for pid in proc.namespace_members(self.namespace) if pid not in (self.init_pid, kernel)]
            if not strays:
                return
            for pid in strays:
                proc.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return

    def interrupt(self):
        """The kernel is first paused and every other process of the sandbox ended: processes the
        cell started (a fork bomb's copies spinning on the CPU) would keep the kernel from
        answering, and slow every later cell."""
        pid = self.kernel_pid()
        if pid is None:
            return
        proc.kill(pid, signal.SIGSTOP)
        self.end_strays()
        proc.kill_main_thread(pid, signal.SIGINT)
        proc.kill(pid, signal.SIGCONT)

    def end(self):
        self.find_kernel()
        if self.init_pid is not None:
            # pid 1 of a namespace dying takes every process of the namespace with it,
            # setsid daemons and double forks included; bwrap then reaps it and exits.
            proc.kill(self.init_pid, signal.SIGKILL)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        proc.killpg(self.process.pid)
        self._reap()
        if self.namespace is not None:
            deadline = time.monotonic() + 10
            while proc.namespace_members(self.namespace) and time.monotonic() < deadline:
                time.sleep(0.02)


class UnconfinedKernel(KernelProcess):
    """prlimit -- python --fork-guard (and setpriv first when it has a uid to drop to). The fork
    guard stays behind as the kernel's parent, so `os.kill(os.getppid(), 9)` cannot reach the
    grader; the kernel is the guard's child."""

    boot_args = ("--fork-guard",)

    def __init__(self, *args):
        super().__init__(*args)
        self.tmp = f"{self.folder}/tmp"
        self.unconfined_pid = None  # the kernel, child of the fork guard

    def argv(self, workdir: Path, connection: Path) -> list:
        prlimit = shutil.which("prlimit")
        if self.uid is not None:   # root without bubblewrap: at least another uid, and its process cap
            processes = int(self.limits.max_processes) + proc.tasks_of_uid(self.uid)
            return self.drop_uid() + [prlimit, *self.limit_args(processes), "--"] + self.python_argv(connection)
        # The grader's own uid: no process cap (it would count every process of the grader's user).
        return ([prlimit, *self.limit_args(None), "--"] if prlimit else []) + self.python_argv(connection)

    def prepare(self):
        (self.folder / "tmp").mkdir()
        if self.uid is not None:
            os.chown(self.folder / "tmp", self.uid, self.uid)

    def find_kernel(self):
        if self.unconfined_pid is None:
            found = proc.children(self.process.pid)
            self.unconfined_pid = found[0] if found else None

    def kernel_pid(self):
        self.find_kernel()
        return self.unconfined_pid

    def end(self):
        # Kill the descendants we can find, then the process group.
        # A daemon that left the session and was re-parented is out of reach (documented).
        for pid in proc.descendants(self.process.pid) + proc.descendants(self.unconfined_pid or -1):
            proc.kill(pid, signal.SIGKILL)
        if self.unconfined_pid is not None:
            proc.kill(self.unconfined_pid, signal.SIGKILL)
        proc.killpg(self.process.pid)
        self._reap()


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


def kernel_uid(limits, slot: _UidSlot):
    "The uid the kernel of `limits` runs as: the pool's slot when sandboxed, else `unsandboxed_uid`."
    return slot.uid if limits.sandbox else unsandboxed_uid(limits)


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
