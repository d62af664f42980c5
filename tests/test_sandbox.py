"""The sandboxed notebook executor against faults and escapes a careless or clever student may try.

The fault notebooks run in ONE batch (a module fixture, three at a time in threads, which also
exercises parallel kernels); each test then checks one case's status, detail, outputs, and that
the honest cell after the fault still ran where the executor promises it.
"""
import os
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tito.grading import sandbox
from tito.grading.sandbox import (OUTPUT_OVERHEAD, ExecutionResult, KernelLimits, SandboxUnavailable,
                                       execute_notebook, sandbox_available)
from tito.paths import project_root

ROOT = project_root(Path(__file__).parent)
# FAST for the cases whose point is a timeout; ROOMY (same caps, more time) for every case that
# must not time out, so that a machine under heavy load cannot make them fail.
FAST = KernelLimits(cell_timeout=3, submission_timeout=40, memory_mb=1536, max_processes=48,
                    max_output_bytes=200_000)
ROOMY = KernelLimits(cell_timeout=30, submission_timeout=120, memory_mb=1536, max_processes=48,
                     max_output_bytes=200_000)
HONEST = "print('honest', 'cell', 'ran')"


def require_sandbox():
    usable, why = sandbox_available()
    assert usable, f"the grading sandbox cannot run here: {why}. Run scripts/setup.sh (installs bubblewrap)."


def notebook(*sources):
    return new_notebook(cells=[new_code_cell(source) for source in sources])


def text_of(cell) -> str:
    "Everything a cell printed or raised, as one string."
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def honest_cell_ran(cell) -> bool:
    "The honest cell ran to its end in a live kernel (its printed words may be cut by the output cap)."
    return isinstance(cell.execution_count, int) and errors_of(cell) == [] and cell.source.endswith(HONEST)


def errors_of(cell) -> list:
    return [out.ename for out in cell.outputs if out.output_type == "error"]


def host_processes_with(marker: str) -> list:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


# ----------------------------------------------------------------------------------------------
# The batch of fault notebooks.

MARKER = f"tt-sandbox-marker-{uuid.uuid4().hex}"
LISTENER = socket.socket()
LISTENER.bind(("127.0.0.1", 0))
PORT = LISTENER.getsockname()[1]

SPAWN_WITH_MARKER = (
    "import os, sys\n"
    "def exec_marked(code):\n"
    f"    os.execv(sys.executable, [sys.executable, '-c', code, {MARKER!r}])\n")


def hidden_paths() -> list:
    """Host paths a submission must not see: the course folder's contents, the instructor's home.
    HOME is listed once (HIDDEN_PATHS): the suite itself adds ~/.ipython, ~/.jupyter, ~/.local."""
    paths = [ROOT / name for name in ("settings.ini", "pyproject.toml", "nbs", "source", "tinytorch",
                                      "tinytorch/core/spatial.py", "tinytorch/core/im2col.py", "gradebook.db")]
    # The sandbox binds the Python installation and the virtual environment; the folders on the
    # way to them exist in it (bare), wherever they live (a venv under ~/.cache makes ~/.cache one).
    bound = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for entry in sorted(Path.home().iterdir())[:20]:
        real = entry.resolve()
        if not any(real == path or real in path.parents or entry in path.parents for path in bound):
            paths.append(entry)
    return [str(p) for p in paths if os.path.lexists(p)]   # a check of a missing path proves nothing


HIDDEN_PATHS = hidden_paths()


CASES = {
    "honest": (ROOMY, [
        "import numpy as np\nfrom tinytorch.core.tensor import Tensor\nx = Tensor(np.arange(6.0).reshape(2, 3))",
        "print(x.data.sum())",
        "x.shape",
        HONEST]),
    "libraries": (KernelLimits(cell_timeout=60, max_output_bytes=200_000), [
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
        "from sklearn.datasets import load_digits\nprint(load_digits().images.shape)",
        "import sys\nfor i in range(3):\n    print(f'\\rstep {i}', end='')\nprint()"]),
    "confinement": (ROOMY, [
        "import os, resource\n"
        "print('as', resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20)\n"
        "print('nproc', resource.getrlimit(resource.RLIMIT_NPROC)[0])\n"
        "print('core', resource.getrlimit(resource.RLIMIT_CORE)[0])\n"
        "print('uid', os.getuid(), os.getgid(), os.getgroups())\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print('caps', status['CapEff'].strip(), status['CapBnd'].strip(), 'nnp', status['NoNewPrivs'].strip())\n"
        "print('pid', os.getpid(), 'processes', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        "print('threads', os.environ['OMP_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])\n"
        "print('parent pid set', 'JPY_PARENT_PID' in os.environ)\n"
        "print('home', os.environ['HOME'], os.environ['IPYTHONDIR'], os.environ['TMPDIR'])\n"
        "print('cwd', os.getcwd())"]),
    "infinite_loop": (FAST, [
        "base = 41",
        "while True:\n    pass",
        "print('after loop', base + 1)"]),
    "ignores_sigint": (FAST, [
        "base = 41",
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        "print('after restart', base + 1)"]),
    "catches_interrupt": (FAST, [
        "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass",
        HONEST]),
    "sleep_at_import": (KernelLimits(cell_timeout=60, submission_timeout=4), [
        "import time\ntime.sleep(1000)",
        HONEST]),
    "os_exit": (ROOMY, [
        "value = 7",
        "import os\nos._exit(1)",
        "print('after crash', value)"]),
    "segfault": (ROOMY, [
        "import ctypes\nctypes.string_at(0)",
        HONEST]),
    "memory_bomb": (ROOMY, [
        "x = bytearray(64 * 2**30)",
        "chunks = []\nwhile True:\n    chunks.append(bytes(64 * 2**20))",
        "import numpy as np\nnp.ones((2**31,))",
        "del chunks\n" + HONEST]),
    "fork_bomb": (ROOMY, [
        SPAWN_WITH_MARKER + "children = []\n"
        "try:\n"
        "    for _ in range(10_000):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            exec_marked('import time; time.sleep(1000)')\n"
        "        children.append(pid)\n"
        "except OSError as error:\n"
        "    print('refused after', len(children), type(error).__name__)",
        HONEST]),
    "spinning_fork_bomb": (FAST, [
        "started = 'yes'",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        # live processes only: the kernel's own children it killed stay zombies until it reaps them
        "import os\ndef alive(p):\n    try:\n        return open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'\n"
        "    except OSError:\n        return False\n"
        "print('after bomb', started, sum(alive(p) for p in os.listdir('/proc') if p.isdigit()))"]),
    "prints_100mb": (ROOMY, [
        "print('x' * 100_000_000)",
        "for _ in range(100_000):\n    print('y' * 1000)",
        HONEST]),
    "bypasses_kernel_cap": (ROOMY, [
        "import sys\nfor stream in (sys.stdout, sys.stderr):\n    stream.__dict__.pop('write', None)\n"
        "print('z' * 50_000_000)",
        HONEST]),
    "huge_error": (ROOMY, [
        "raise ValueError('e' * 3_000_000)",
        HONEST]),
    "forges_messages": (ROOMY, [
        # Code in a cell can sign kernel messages: it fakes an early "ok" reply and idle status
        # for its own cell and then fails; and it publishes output under the id the next request
        # would have with jupyter_client's numbered ids (session_pid_count).
        "kernel = get_ipython().kernel\n"
        "parent = kernel.get_parent()\n"
        "grader = kernel._parent_ident['shell']   # the grader's routing id on the shell socket\n"
        "kernel.session.send(kernel.iopub_socket, 'status', {'execution_state': 'idle'}, parent=parent)\n"
        "kernel.session.send(kernel.shell_stream, 'execute_reply', {'status': 'ok', 'execution_count': 1},"
        " parent=parent, ident=grader)\n"
        "import time\ntime.sleep(0.5)\n"
        "head, _, count = parent['header']['msg_id'].rpartition('_')\n"
        "guess = dict(parent['header'], msg_id=f'{head}_{int(count) + 2}' if count.isdigit() else 'x')\n"
        "kernel.session.send(kernel.iopub_socket, 'stream', {'name': 'stdout', 'text': 'FORGED'},"
        " parent={'header': guess})\n"
        "raise AssertionError('the real failure')",
        "print('next cell')"]),
    "malformed_outputs": (ROOMY, [
        # Outputs nbformat's schema refuses (a kernel's code can publish anything): dropped, the rest kept.
        "kernel = get_ipython().kernel\n"
        "parent = kernel.get_parent()\n"
        "kernel.session.send(kernel.iopub_socket, 'stream', {'name': 'weird', 'text': 3}, parent=parent)\n"
        "kernel.session.send(kernel.iopub_socket, 'display_data', {'data': 5, 'metadata': {}}, parent=parent)\n"
        "print('kept')",
        HONEST]),
    "daemons": (ROOMY, [
        SPAWN_WITH_MARKER +
        "import subprocess, time\n"
        "subprocess.Popen(['setsid', sys.executable, '-c', "
        "\"open('setsid-alive', 'w').write('1'); import time; time.sleep(1000)\", " + repr(MARKER) + "])\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        exec_marked(\"open('double-fork-alive', 'w').write('1'); import time; time.sleep(1000)\")\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "for _ in range(100):\n"
        "    if os.path.exists('setsid-alive') and os.path.exists('double-fork-alive'):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "print(sorted(os.listdir('.')))",
        HONEST]),
    "signals_parent": (ROOMY, [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "os.kill(1, signal.SIGKILL)",
        HONEST]),
    "kills_everything": (ROOMY, [
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
        HONEST]),
    "network": (ROOMY, [
        "import socket\n"
        "for address in [('127.0.0.1', %d), ('8.8.8.8', 53), ('1.1.1.1', 443)]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=2)\n"
        "        print('CONNECTED', address)\n"
        "    except OSError as error:\n"
        "        print('refused', address, type(error).__name__)" % PORT,
        "try:\n    socket.gethostbyname('example.com')\n    print('RESOLVED')\n"
        "except OSError as error:\n    print('no dns', type(error).__name__)",
        HONEST]),
    "reads_instructor_files": (ROOMY, [
        "import os\n"
        f"for path in {HIDDEN_PATHS!r}:\n"
        "    print(path, 'VISIBLE' if os.path.lexists(path) else 'hidden')\n"
        f"print('course folder holds', sorted(os.listdir({str(ROOT)!r})) if os.path.isdir({str(ROOT)!r}) else [])",
        HONEST]),
    "writes_outside": (ROOMY, [
        "import os, sys, tinytorch\n"
        "targets = ['/usr/evil-{m}', {root!r} + '/evil-{m}', os.path.dirname(tinytorch.__file__) + '/evil-{m}',"
        " sys.prefix + '/evil-{m}', {other!r} + '/evil-{m}', '/evil-{m}',"
        " os.path.dirname(sys.argv[sys.argv.index('-f') + 1]) + '/evil-{m}']\n"
        "for path in targets:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as error:\n"
        "        print('refused', path, type(error).__name__)\n"
        "open('/tmp/private-{m}', 'w').write('x')\n"
        "print('tmp ok')",
        "try:\n"
        "    for i in range(10):\n"
        "        open(f'fill{i}', 'wb').write(b'x' * 100 * 2**20)\n"
        "    print('FILLED')\n"
        "except OSError as error:\n"
        "    print('full', error.errno, sorted(os.listdir('.')))",
        HONEST]),
    "plants_startup_file": (ROOMY, [
        "import os\n"
        "for base in [os.environ['IPYTHONDIR'], os.path.expanduser('~/.ipython')]:\n"
        "    folder = os.path.join(base, 'profile_default', 'startup')\n"
        "    os.makedirs(folder, exist_ok=True)\n"
        "    open(os.path.join(folder, '00-evil.py'), 'w').write('PLANTED = True')\n"
        "print('planted')"]),
    "after_planted_startup": (ROOMY, [
        "print('PLANTED' in globals())"]),
    "tinytorch_solutions": (ROOMY, [
        "import tinytorch\nprint(tinytorch.__file__)",
        "import tinytorch.core.spatial",
        "import tinytorch.core.im2col",
        "import tito",
        "from tinytorch.core.tensor import Tensor\nfrom tinytorch.core.layers import Linear\n"
        "from tinytorch.core.optim import SGD\nfrom tinytorch.record import record\nprint('imports ok')"]),
    "shadowing_numpy": (ROOMY, [
        "import os, sys\nprint(sorted(os.listdir('.')))\nprint('' in sys.path, os.getcwd() in sys.path)",
        "import numpy\nprint(numpy.__file__)"]),
}
BREAKING_PLANTS = {"shadowing_numpy": {"numpy.py": "raise RuntimeError('SHADOWED numpy')\n"}}


def _run_case(name: str, base: Path) -> tuple:
    limits, sources = CASES[name]
    workdir = base / name / "work"
    workdir.mkdir(parents=True)
    (base / name / "other_student").mkdir()
    (base / name / "other_student" / "secret.ipynb").write_text("{}")
    for file_name, text in BREAKING_PLANTS.get(name, {}).items():
        (workdir / file_name).write_text(text)
    sources = [s.replace("{m}", MARKER).replace("{root!r}", repr(str(ROOT)))
                .replace("{other!r}", repr(str(base / name / "other_student"))) for s in sources]
    return execute_notebook(notebook(*sources), workdir, limits), workdir


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    require_sandbox()
    base = tmp_path_factory.mktemp("sandbox-batch")
    LISTENER.listen(5)
    LISTENER.settimeout(0.1)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(LISTENER.accept())
            except OSError:
                pass

    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    # Two grader processes at the same time as the threads below.
    script = ("import sys, pathlib\n"
              "from nbformat.v4 import new_notebook, new_code_cell\n"
              "from tito.grading.sandbox import execute_notebook, KernelLimits\n"
              "nb = new_notebook(cells=[new_code_cell('import os, time\\ntime.sleep(1.5)\\nprint(os.getuid())')])\n"
              "r = execute_notebook(nb, pathlib.Path(sys.argv[1]), KernelLimits(cell_timeout=20))\n"
              "print(r.status, r.notebook.cells[0].outputs[0]['text'].strip())\n")
    processes = []
    for n in range(2):
        (base / f"process{n}").mkdir()
        # The second grader is started as "../<venv>/bin/python" from tests/, a folder the sandbox
        # does not hold: its sys.executable is then "<root>/tests/../<venv>/bin/python".
        python, cwd = sys.executable, None
        if n == 1:
            python, cwd = os.path.relpath(sys.executable, ROOT / "tests"), ROOT / "tests"
        processes.append(subprocess.Popen([python, "-c", script, str(base / f"process{n}")],
                                          stdout=subprocess.PIPE, text=True, cwd=cwd))
    ordered = [name for name in CASES if name != "after_planted_startup"]
    results = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run_case, name, base) for name in ordered}
        results["plants_startup_file"] = futures["plants_startup_file"].result()
        # The next kernel starts only after the planting one has ended.
        futures["after_planted_startup"] = pool.submit(_run_case, "after_planted_startup", base)
        for name, future in futures.items():
            results[name] = future.result()
    stop.set()
    watcher.join()
    LISTENER.close()
    results["_accepted"] = accepted
    results["_processes"] = [process.communicate(timeout=300)[0].split() for process in processes]
    return results


def cells(batch, name):
    return batch[name][0].notebook.cells


def test_every_case_returns_a_result(batch):
    for name in CASES:
        result = batch[name][0]
        assert isinstance(result, ExecutionResult), name
        assert result.status in ("ok", "timeout", "crashed", "memory"), (name, result.status)


def test_honest_notebook_runs_clean(batch):
    result, workdir = batch["honest"]
    last = cells(batch, "honest")[-1]
    assert (result.status, result.detail, result.timed_out_cells, result.not_run_cells) == ("ok", "", [], [])
    c = result.notebook.cells
    assert text_of(c[1]).strip() == "15.0"
    assert text_of(c[2]) == "(2, 3)"
    assert [cell.execution_count for cell in c] == [1, 2, 3, 4]
    assert honest_cell_ran(last) and text_of(last) == "honest cell ran\n"


def test_course_libraries_work_without_warnings(batch):
    result, _ = batch["libraries"]
    c = cells(batch, "libraries")
    assert result.status == "ok", result.detail
    assert [out.name for cell in c for out in cell.outputs if out.output_type == "stream"
            and out.name == "stderr"] == [], [text_of(cell) for cell in c]
    assert any("image/png" in out.get("data", {}) for out in c[0].outputs)
    assert text_of(c[1]).strip() == "(1797, 8, 8)"
    assert text_of(c[2]) == "step 2\n"


def test_kernel_runs_unprivileged_with_limits(batch):
    result, workdir = batch["confinement"]
    lines = dict(line.split(" ", 1) for line in text_of(cells(batch, "confinement")[0]).strip().splitlines())
    assert lines["as"] == str(FAST.memory_mb)
    assert lines["nproc"] == str(FAST.max_processes)
    assert lines["core"] == "0"
    uid, gid, groups = lines["uid"].split(" ", 2)
    assert int(uid) != 0 and int(uid) == int(gid) and groups == "[]"
    assert lines["caps"] == "0000000000000000 0000000000000000 nnp 1"
    assert lines["pid"].startswith("2 processes [1, 2")       # its own pid namespace
    assert lines["threads"] == "1 1 1"
    assert lines["parent"] == "pid set False"
    assert lines["home"] == "/tmp/home /tmp/home/.ipython /tmp"     # in the kernel's own /tmp
    assert lines["cwd"] == str(workdir.resolve())


def test_parallel_processes_get_separate_kernels_and_uids(batch):
    "Two grader processes at once (one started through a relative path to Python) get a kernel and a uid each."
    answers = batch["_processes"]
    assert [status for status, _ in answers] == ["ok", "ok"], answers
    assert answers[0][1] != answers[1][1]     # one uid each: a fork bomb in one cannot starve the other


def test_infinite_loop_is_interrupted_and_the_rest_runs(batch):
    result, _ = batch["infinite_loop"]
    assert result.status == "timeout"
    assert result.timed_out_cells == [1]
    assert result.detail == "cell 2 ran past the 3 s limit and was interrupted"
    assert errors_of(cells(batch, "infinite_loop")[1]) == ["KeyboardInterrupt"]
    assert text_of(cells(batch, "infinite_loop")[2]).strip() == "after loop 42"
    assert result.restarts == 0


def test_loop_ignoring_sigint_gets_a_new_kernel_that_replays_earlier_cells(batch):
    result, _ = batch["ignores_sigint"]
    assert result.status == "timeout"
    assert result.timed_out_cells == [1]
    assert result.not_run_cells == [1]
    assert "cell 2 ran past the 3 s limit and did not stop when interrupted" in result.detail
    assert "a new kernel went on with the next cell" in result.detail
    assert errors_of(cells(batch, "ignores_sigint")[1]) == ["CellTimeoutError"]
    assert text_of(cells(batch, "ignores_sigint")[2]).strip() == "after restart 42"
    assert result.restarts == 1


def test_loop_that_swallows_keyboard_interrupt_is_stopped(batch):
    result, workdir = batch["catches_interrupt"]
    last = cells(batch, "catches_interrupt")[-1]
    assert result.status == "timeout" and result.timed_out_cells == [0]
    assert "did not stop when interrupted" in result.detail
    assert honest_cell_ran(last)


def test_sleep_at_import_hits_the_submission_budget(batch):
    result, workdir = batch["sleep_at_import"]
    assert result.status == "timeout"
    assert result.detail.startswith("the notebook ran past the 4 s limit for a whole submission in cell 1")
    assert result.timed_out_cells == []           # the 60 s cell limit was never reached
    assert result.not_run_cells == [0, 1]
    assert errors_of(cells(batch, "sleep_at_import")[0]) == ["CellTimeoutError"]
    assert errors_of(cells(batch, "sleep_at_import")[1]) == ["CellNotRun"]
    assert result.seconds < 30


def test_os_exit_is_a_crash_with_its_exit_code_and_the_rest_runs(batch):
    result, _ = batch["os_exit"]
    assert result.status == "crashed"
    assert result.detail.startswith("the kernel exited (exit code 1) in cell 2")
    assert errors_of(cells(batch, "os_exit")[1]) == ["DeadKernelError"]
    assert text_of(cells(batch, "os_exit")[2]).strip() == "after crash 7"


def test_segfault_is_a_crash_that_names_the_signal(batch):
    result, workdir = batch["segfault"]
    last = cells(batch, "segfault")[-1]
    assert result.status == "crashed"
    assert "the kernel died (signal 11, segmentation fault) in cell 1" in result.detail
    assert honest_cell_ran(last)


def test_memory_bombs_raise_memory_error_inside_the_kernel(batch):
    result, workdir = batch["memory_bomb"]
    last = cells(batch, "memory_bomb")[-1]
    c = cells(batch, "memory_bomb")
    assert result.status == "memory"
    assert "cell 1 ran out of memory (the limit is 1536 MB)" in result.detail
    assert errors_of(c[0]) == ["MemoryError"]
    assert errors_of(c[1]) == ["MemoryError"]
    assert errors_of(c[2])[0].endswith("MemoryError")
    assert honest_cell_ran(last)


def test_fork_bomb_is_refused_and_leaves_no_process(batch):
    result, workdir = batch["fork_bomb"]
    last = cells(batch, "fork_bomb")[-1]
    printed = text_of(cells(batch, "fork_bomb")[0])
    assert printed.startswith("refused after "), printed
    assert 0 < int(printed.split()[2]) < FAST.max_processes
    assert honest_cell_ran(last)
    assert host_processes_with(MARKER) == []


def test_spinning_fork_bomb_is_ended_with_its_kernel(batch):
    result, _ = batch["spinning_fork_bomb"]
    # Python swallows the KeyboardInterrupt when it lands in os.fork's at-fork hooks, so the
    # interrupt usually fails: the kernel and all its copies end and a new kernel goes on. When it
    # lands elsewhere the loop stops and the same kernel goes on. Either way the copies are gone.
    assert result.status == "timeout" and result.timed_out_cells == [1], result.detail
    outcomes = {"cell 2 ran past the 3 s limit and did not stop when interrupted, so its kernel was stopped; "
                "a new kernel went on with the next cell": 1,
                "cell 2 ran past the 3 s limit and was interrupted": 0}
    assert result.detail in outcomes and result.restarts == outcomes[result.detail], (result.detail, result.restarts)
    assert text_of(cells(batch, "spinning_fork_bomb")[2]).strip() == "after bomb yes 2"


def test_flood_of_output_is_capped_and_the_rest_runs(batch):
    result, workdir = batch["prints_100mb"]
    last = cells(batch, "prints_100mb")[-1]
    assert result.output_truncated
    assert "output cut after 200,000 bytes" in result.detail
    kept = sum(len(text_of(cell).encode()) for cell in cells(batch, "prints_100mb"))
    # each output counts OUTPUT_OVERHEAD bytes besides its text (a flood of tiny outputs is capped too)
    assert FAST.max_output_bytes - 50 * OUTPUT_OVERHEAD <= kept < FAST.max_output_bytes + 1000
    assert "[output cut: this submission printed more than 200,000 bytes" in text_of(cells(batch, "prints_100mb")[0])
    assert honest_cell_ran(last)
    assert result.status == "ok"


@pytest.mark.parametrize("case", ["bypasses_kernel_cap", "huge_error"])
def test_a_message_above_the_cap_stops_the_kernel_not_the_grader(batch, case):
    result, _ = batch[case]
    c = cells(batch, case)
    # The message is refused on the way in (the grader never holds it); the cell counts as failed.
    assert result.status == "crashed"
    assert result.detail.startswith("cell 1 sent more than 2,648,576 bytes at once (output is capped), "
                                    "so its kernel was stopped; a new kernel went on with the next cell"), result.detail
    assert errors_of(c[0]) == ["OutputTooLarge"]
    assert sum(len(text_of(cell).encode()) for cell in c) < 5000
    assert honest_cell_ran(c[-1]) and text_of(c[-1]) == "honest cell ran\n"


def test_outputs_the_notebook_format_refuses_are_dropped_and_the_rest_is_kept(batch):
    result, _ = batch["malformed_outputs"]
    first, last = cells(batch, "malformed_outputs")
    assert result.status == "ok", result.detail
    assert [o.get("text") for o in first.outputs] == ["kept\n"] and honest_cell_ran(last)


def test_forged_kernel_messages_do_not_hide_a_failure(batch):
    result, _ = batch["forges_messages"]
    c = cells(batch, "forges_messages")
    assert "AssertionError" in errors_of(c[0]), [text_of(cell) for cell in c]
    assert "FORGED" not in text_of(c[1])
    assert text_of(c[1]).strip() == "next cell"


def test_setsid_daemon_and_double_fork_do_not_survive(batch):
    result, workdir = batch["daemons"]
    last = cells(batch, "daemons")[-1]
    listing = text_of(cells(batch, "daemons")[0])
    assert "'setsid-alive'" in listing and "'double-fork-alive'" in listing, listing
    assert host_processes_with(MARKER) == []
    assert honest_cell_ran(last)


def test_signalling_the_parent_cannot_reach_the_grader(batch):
    result, workdir = batch["signals_parent"]
    last = cells(batch, "signals_parent")[-1]
    c = cells(batch, "signals_parent")
    assert errors_of(c[0]) == ["PermissionError"]
    assert errors_of(c[1]) == ["PermissionError"]
    assert honest_cell_ran(last)
    assert result.status == "ok"


def test_killing_every_own_process_is_a_crash_not_a_grader_failure(batch):
    result, workdir = batch["kills_everything"]
    last = cells(batch, "kills_everything")[-1]
    assert result.status == "crashed"
    assert "signal 9, killed" in result.detail
    assert honest_cell_ran(last)


def test_no_network(batch):
    c = cells(batch, "network")
    printed = text_of(c[0])
    assert "CONNECTED" not in printed and printed.count("refused") == 3, printed
    assert "RESOLVED" not in text_of(c[1])
    assert batch["_accepted"] == []


def test_instructor_files_are_invisible(batch):
    printed = text_of(cells(batch, "reads_instructor_files")[0])
    assert "VISIBLE" not in printed, printed
    assert [line for line in printed.splitlines() if line.endswith(" hidden")] == [f"{p} hidden" for p in HIDDEN_PATHS]
    assert printed.strip().splitlines()[-1] in ("course folder holds ['.venv']", "course folder holds []")


def test_writes_outside_the_work_folder_fail(batch):
    result, workdir = batch["writes_outside"]
    printed = text_of(cells(batch, "writes_outside")[0])
    assert "WROTE" not in printed and printed.count("refused") == 7, printed
    assert "tmp ok" in printed
    assert not Path(f"/tmp/private-{MARKER}").exists()   # the kernel's /tmp is its own
    assert not Path(f"/evil-{MARKER}").exists() and not (ROOT / f"evil-{MARKER}").exists()


def test_work_folder_is_capped_memory_that_never_reaches_the_grader_disk(batch):
    result, workdir = batch["writes_outside"]
    c = cells(batch, "writes_outside")
    assert text_of(c[1]).startswith("full 28 ['fill0', 'fill1', 'fill2'"), text_of(c[1])   # ENOSPC
    assert honest_cell_ran(c[-1])
    assert list(workdir.iterdir()) == []


def test_planted_startup_file_does_not_reach_the_next_kernel(batch):
    assert text_of(cells(batch, "plants_startup_file")[0]).strip() == "planted"
    assert text_of(cells(batch, "after_planted_startup")[0]).strip() == "False"


def test_solutions_cannot_be_imported(batch):
    c = cells(batch, "tinytorch_solutions")
    assert "/tinytorch-runtime-" in text_of(c[0])
    assert errors_of(c[1]) == ["ModuleNotFoundError"]
    assert errors_of(c[2]) == ["ModuleNotFoundError"]
    assert errors_of(c[3]) == ["ModuleNotFoundError"]   # the course tooling is not the kernel's to import
    assert text_of(c[4]).strip() == "imports ok"


def test_module_beside_the_notebook_does_not_shadow_a_library(batch):
    c = cells(batch, "shadowing_numpy")
    assert "'numpy.py'" in text_of(c[0]) and "False False" in text_of(c[0])
    assert errors_of(c[1]) == []
    assert "site-packages/numpy/__init__.py" in text_of(c[1])


# ----------------------------------------------------------------------------------------------
# Outside the batch.

def test_unsandboxed_kernel_runs_and_interrupts(tmp_path):
    limits = KernelLimits(cell_timeout=2, submission_timeout=30, sandbox=False)
    result = execute_notebook(notebook("x = 1", "import time\ntime.sleep(100)", "print(x + 1)"), tmp_path, limits)
    assert result.status == "timeout" and result.timed_out_cells == [1]
    assert text_of(result.notebook.cells[2]).strip() == "2"


def test_unsandboxed_kernel_cannot_kill_the_grader_through_its_parent_pid(tmp_path):
    # Run in a child process: if the guard failed, that process, not pytest, would be killed.
    script = ("import sys, pathlib\n"
              "from nbformat.v4 import new_notebook, new_code_cell\n"
              "from tito.grading.sandbox import execute_notebook, KernelLimits\n"
              "nb = new_notebook(cells=[new_code_cell('import os, signal\\nos.kill(os.getppid(), signal.SIGKILL)'),"
              " new_code_cell('print(40 + 2)')])\n"
              "r = execute_notebook(nb, pathlib.Path(sys.argv[1]), KernelLimits(cell_timeout=30, sandbox=False))\n"
              "print(r.status, '|', r.detail, '|', r.notebook.cells[1].outputs[0]['text'].strip())\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    status, detail, after = run.stdout.strip().split(" | ")
    assert status == "crashed" and detail.startswith("the kernel died (signal 9, killed) in cell 1"), detail
    assert after == "42"


def test_stale_outputs_are_cleared_skipped_cells_do_not_run_and_markdown_is_left_alone(tmp_path):
    require_sandbox()
    nb = new_notebook(cells=[new_markdown_cell("# title"), new_code_cell("x = 1 + 1\nx"), new_code_cell("  "),
                             new_code_cell("x = 3\nraise SystemExit"), new_code_cell("print(x)")])
    nb.cells[2].outputs = [{"output_type": "stream", "name": "stdout", "text": "forged record"}]
    nb.cells[3].outputs = [{"output_type": "stream", "name": "stdout", "text": "forged record"}]
    result = execute_notebook(nb, tmp_path, ROOMY, skip={3})
    assert result.status == "ok" and result.detail == ""
    assert result.notebook.cells[0].source == "# title"
    assert text_of(result.notebook.cells[1]) == "2"
    assert result.notebook.cells[2].outputs == []
    assert text_of(result.notebook.cells[3]) == sandbox.SKIPPED_NOTE         # not run: x is still 2
    assert result.notebook.cells[3].execution_count is None
    assert text_of(result.notebook.cells[4]) == "2\n"
    assert nb.cells[2].outputs[0]["text"] == "forged record"      # the caller's notebook is not changed
    assert 0 < result.kernel_cpu < result.seconds + 1            # read from /proc before the kernel ended


def test_sandbox_refuses_to_run_where_bubblewrap_cannot(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox.limits, "sandbox_available", lambda: (False, "bwrap not found"))
    with pytest.raises(SandboxUnavailable, match="bwrap not found"):
        execute_notebook(notebook("1"), tmp_path, KernelLimits())


def test_limits_from_settings_and_bad_limits():
    from tito.settings import load_settings
    settings = load_settings(ROOT)
    limits = KernelLimits.from_settings(settings)
    assert (limits.cell_timeout, limits.memory_mb, limits.sandbox) == (
        settings.cell_timeout, settings.memory_mb, settings.sandbox)
    with pytest.raises(ValueError, match="cell_timeout must be a positive number, got 0"):
        KernelLimits(cell_timeout=0)


def test_ipython_syntax_still_works_where_valid_python_skips_the_tokenizer(tmp_path):
    "The grading kernel skips IPython's token pass only for cells that parse as Python: magics, `!` and `?` still work."
    require_sandbox()
    nb = notebook("x = 6 * 7\nprint(x)", "%time y = x + 1", "z = !echo shell-ran\nprint(z)", "print(y)",
                  "names = %who_ls\nprint(type(names).__name__)", "len?", "w = (10\n% 3)\nprint(w)",
                  "print('\\d', 1)", "def f(:\n    pass")
    result = execute_notebook(nb, tmp_path, ROOMY)
    texts = [text_of(cell) for cell in result.notebook.cells]
    assert texts[0] == "42\n"
    assert "Wall time" in texts[1] and texts[3] == "43\n"
    assert "shell-ran" in texts[2]
    assert texts[4] == "list\n" and errors_of(result.notebook.cells[5]) == []
    assert texts[6] == "1\n"                                         # `%` inside an expression is Python's
    assert texts[7].startswith("\\d 1")
    assert "SyntaxError" in texts[8]
