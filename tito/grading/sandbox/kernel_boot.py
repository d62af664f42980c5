"""Start a grading kernel with the student runtime first on sys.path.

Never imported: `tito.grading.sandbox.runtime` copies this file into the student runtime (as
`_tinytorch_kernel.py`) and every grading kernel runs it as its main script, inside the sandbox."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _here)
# An editable install of the course would map `tinytorch` to the instructor's checkout:
# drop its import hooks so only the student runtime can answer.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "").lower()]
sys.path_importer_cache.clear()
del _here

# The kernel's private folders (inside the sandbox they live in its own /tmp) and matplotlib's
# font list, copied so that matplotlib does not scan every font at its first import.
for _name in ("HOME", "IPYTHONDIR", "MPLCONFIGDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR"):
    if os.environ.get(_name):
        os.makedirs(os.environ[_name], exist_ok=True)
_seed = os.environ.pop("TINYTORCH_MPL_SEED", "")
if _seed and os.path.isdir(_seed) and os.environ.get("MPLCONFIGDIR"):
    import shutil
    for _file in os.listdir(_seed):
        shutil.copyfile(os.path.join(_seed, _file), os.path.join(os.environ["MPLCONFIGDIR"], _file))

if len(sys.argv) > 1 and sys.argv[1] == "--fork-guard":
    # Unsandboxed, the kernel's parent would be the grader itself, which `os.kill(os.getppid(), 9)`
    # would kill. This process stays behind as the parent the kernel sees, and reports its status.
    del sys.argv[1]
    import signal
    _child = os.fork()
    if _child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _, _status = os.waitpid(_child, 0)
        _code = os.waitstatus_to_exitcode(_status)
        os._exit(128 - _code if _code < 0 else _code)

# No debugger in a grading kernel: nothing would attach to it, and importing debugpy costs
# ~0.15 s of every kernel's start. ipykernel reads the failed import as "debugpy not installed".
sys.modules["debugpy"] = None

from ipykernel.kernelapp import IPKernelApp

app = IPKernelApp.instance()
app.initialize()

# Stop forwarding printed text a little past the grader's cap, so that a flood costs neither
# side time or memory. This is a courtesy, not a guarantee: the grader caps again on its side.
_left = [int(os.environ.get("TINYTORCH_OUTPUT_LIMIT", "0")) or None]


def _capped(write):
    def capped_write(text):
        if _left[0] is None:
            return write(text)
        if _left[0] <= 0:
            return len(text)
        size = len(text)
        if size > _left[0]:
            text = text[:_left[0]]
        _left[0] -= size
        write(text)
        return size
    return capped_write


for _stream in (sys.stdout, sys.stderr):
    if _stream is not None:
        _stream.write = _capped(_stream.write)
del _stream

# The same courtesy for a flood of display() calls: past the grader's count cap they are dropped here.
_shown = [int(os.environ.get("TINYTORCH_OUTPUT_COUNT", "0")) or None]
_publish = app.shell.display_pub.publish


def _counted_publish(*args, **kwargs):
    if _shown[0] is not None:
        if _shown[0] <= 0:
            return None
        _shown[0] -= 1
    return _publish(*args, **kwargs)


app.shell.display_pub.publish = _counted_publish
_format = app.shell.display_formatter.format


def _counted_format(*args, **kwargs):
    # Past the cap, display() need not even compute what it would show (nothing is sent).
    if _shown[0] is not None and _shown[0] <= 0:
        return {}, {}
    return _format(*args, **kwargs)


app.shell.display_formatter.format = _counted_format

# ipykernel transforms a cell's source (IPython's magics, `!`, `?`: a tokenizer pass over the whole
# cell) to decide whether it is async, then IPython's run_cell transforms the same source again.
# The second call returns the first's result: same text, same transformers, and no code of the
# cell runs between the two calls. The memo holds one cell, is used at most once, and is dropped
# when a cell ends (an async cell is transformed only once, so its memo is never used).
_transform = app.shell.transform_cell
_last_transform = [None, None]


def _transform_once(raw_cell):
    if _last_transform[0] is not None and _last_transform[0] == raw_cell:
        result = _last_transform[1]
        _last_transform[0] = _last_transform[1] = None
        return result
    _last_transform[0] = None
    result = _transform(raw_cell)
    _last_transform[0], _last_transform[1] = raw_cell, result
    return result


def _forget_transform(*args):
    _last_transform[0] = _last_transform[1] = None


app.shell.transform_cell = _transform_once
app.shell.events.register("post_execute", _forget_transform)

# That tokenizer pass (pure Python, ~2-3 ms a cell) looks for IPython's own syntax: `%magic`, `!command`,
# `a = %magic`, `a = !command`, `name?`. None of it is valid Python, so a cell that already parses as
# Python has none of it and skips the pass; any other cell (a syntax error included) takes IPython's own.
# The line-based clean-ups before it (leading blank lines, prompts, `%%` cell magics) still run for all.
import ast as _ast
import warnings as _warnings

_manager = app.shell.input_transformer_manager
_token_transforms = _manager.do_token_transforms


def _token_transforms_if_needed(lines):
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")      # IPython's own compile reports them, once
            compile("".join(lines), "<cell>", "exec", _ast.PyCF_ONLY_AST)
    except Exception:
        return _token_transforms(lines)
    return lines


_manager.do_token_transforms = _token_transforms_if_needed
app.start()
