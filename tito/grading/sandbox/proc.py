"""Process bookkeeping through /proc: who is whose child, which pid namespace, CPU used, signals.

`/proc/<pid>/stat` is read and parsed in one place, `read_stat`."""
from __future__ import annotations

import os
import signal
from typing import NamedTuple


class ProcStat(NamedTuple):
    state: bytes      # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    cpu_ticks: int    # utime + stime + cutime + cstime: its own and its reaped children's

    @property
    def live(self) -> bool:
        return self.state not in (b"Z", b"X")


def read_stat(pid) -> ProcStat | None:
    "The fields of `/proc/<pid>/stat` the sandbox uses, or None when `pid` is gone."
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
        # The command name (field 2) is in parentheses and may hold spaces or ")": split after the last.
        fields = text[text.rindex(b")") + 2:].split()
        return ProcStat(fields[0], int(fields[1]), sum(int(value) for value in fields[11:15]))
    except (OSError, ValueError, IndexError, TypeError):
        return None


def live_parent(pid: int) -> int | None:
    "The parent of a live (not zombie) `pid`, or None."
    info = read_stat(pid)
    return info.ppid if info and info.live else None


def namespace_of(pid: int) -> str | None:
    "The pid namespace of a live `pid`, or None."
    if live_parent(pid) is None:
        return None
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def cpu_seconds(pid) -> float:
    "CPU seconds `pid` and its reaped children have used (user + system), 0 when it is gone."
    info = read_stat(pid) if pid is not None else None
    return info.cpu_ticks / os.sysconf("SC_CLK_TCK") if info else 0.0


def all_pids() -> list:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _children_map() -> dict:
    "parent pid -> its live children, for every process now."
    parents = {}
    for pid in all_pids():
        parent = live_parent(pid)
        if parent is not None:
            parents.setdefault(parent, []).append(pid)
    return parents


def children(pid: int) -> list:
    return _children_map().get(pid, [])


def descendants(pid: int) -> list:
    parents = _children_map()
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tasks_of_uid(uid: int) -> int:
    "Threads of all processes whose real uid is `uid` (what RLIMIT_NPROC counts)."
    total = 0
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    return total


def namespace_members(namespace: str) -> list:
    "Live processes of the pid namespace `namespace`."
    return [pid for pid in all_pids() if namespace_of(pid) == namespace]


def ns_pid(pid: int):
    "The pid `pid` has inside its own pid namespace (last field of NSpid)."
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


# ----------------------------------------------------------------------------------------------
# Signals.

def kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "ppc64le": 250, "s390x": 241}.get(os.uname().machine)


def kill_main_thread(pid: int, sig) -> None:
    """Signal the main thread of `pid` itself (tgkill). A process-directed signal may be taken by
    any thread: ipykernel's helper threads then set Python's flag while the main thread sleeps on
    (`time.sleep(10_000)` never interrupted), most often when the signal was pending over a
    SIGSTOP/SIGCONT. The main thread's id is the pid."""
    if _SYS_TGKILL is None:
        return kill(pid, sig)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, pid, int(sig)) != 0 and ctypes.get_errno() not in (3, 1):  # ESRCH, EPERM
        kill(pid, sig)


_SIGNAL_NAMES = {signal.SIGSEGV: "segmentation fault", signal.SIGKILL: "killed",
                 signal.SIGABRT: "aborted", signal.SIGBUS: "bus error", signal.SIGFPE: "arithmetic error",
                 signal.SIGILL: "illegal instruction", signal.SIGXCPU: "CPU time limit",
                 signal.SIGXFSZ: "file size limit", signal.SIGTERM: "terminated"}


def describe_exit(code) -> str:
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
