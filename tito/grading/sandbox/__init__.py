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
      -- python -I student_runtime/_tinytorch_kernel.py -f <connection file>   (kernel_boot.py)

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

Faults (see `execute.execute_notebook`): a cell past `cell_timeout` is interrupted (SIGINT) and the
notebook goes on; a kernel that ignores the interrupt, or dies, is ended and a new kernel is
started, which re-runs the cells that had completed before (their new output is discarded) and
then goes on with the next cell, at most `MAX_RESTARTS` times; past `submission_timeout` the run
stops. Cells that never finished get an error output, so a grader cannot mistake an empty test
cell for a passing one. Before returning, the kernel's whole process tree is gone: the kernel is
pid 1's child in its own pid namespace, and killing pid 1 kills everything in it.

The package, one job per module (imports go down this list, never up):

    limits     KernelLimits, SandboxUnavailable, sandbox_available (is bubblewrap usable here?)
    proc       /proc: parents, pid namespaces, CPU seconds, signals; `/proc/<pid>/stat` read once
    runtime    the student runtime (STUDENT_RUNTIME_FILES, kernel_boot.py, matplotlib's font list)
    launch     the kernel's command and process tree: SandboxedKernel or UnconfinedKernel, chosen
               once by `kernel_process`; the uid pool (_UidSlot)
    channel    the grader's sockets to a kernel: connection file, signed requests, polling
    kernel     one kernel = its process + its channel, started (handshake) and stopped together
    outputs    what is kept of the output: the byte and count caps, tracebacks cut, streams tidied
    execute    the cells in order (_Run), timeouts, restarts, and `execute_notebook`
"""

from tito.grading.sandbox.execute import SKIPPED_NOTE, ExecutionResult, execute_notebook
from tito.grading.sandbox.limits import KernelLimits, SandboxUnavailable, sandbox_available
from tito.grading.sandbox.outputs import OUTPUT_OVERHEAD
from tito.grading.sandbox.runtime import STUDENT_RUNTIME_FILES, build_student_runtime, student_runtime

__all__ = ["KernelLimits", "ExecutionResult", "SandboxUnavailable", "sandbox_available",
           "execute_notebook", "build_student_runtime", "student_runtime", "STUDENT_RUNTIME_FILES",
           "OUTPUT_OVERHEAD", "SKIPPED_NOTE"]
