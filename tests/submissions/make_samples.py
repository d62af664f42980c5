"""(Re)generate the sample submissions in tests/submissions/submitted/ from the course notebook.

    .venv/bin/python tests/submissions/make_samples.py            # from source/ and release/ of the project
    .venv/bin/python tests/submissions/make_samples.py --expect-from COURSE/grades.csv   # after reviewing a batch

Every sample starts from the released notebook (what a student is handed, nbgrader metadata
and checksums included) with the solution regions of source/ filled in ("reference"); the
others are text edits of that: alternative correct solutions, one common bug each, faults and
cheats. An edit that no longer finds its text fails loudly, so the samples follow the notebook.
The layout is nbgrader's: submitted/<student>/09_spatial/09_spatial.ipynb.
"""
import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULE, NOTEBOOK = "09_spatial", "09_spatial.ipynb"
SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


class SampleError(RuntimeError):
    "An edit did not apply: the notebook changed; update this script."


def text(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def drop_markers(source: str) -> str:
    "The source with the solution markers removed and hidden-test regions cut (what the author solved)."
    lines, hidden = [], False
    for line in source.splitlines():
        if HIDDEN[0] in line:
            hidden = True
            continue
        if HIDDEN[1] in line:
            hidden = False
            continue
        if hidden or SOLUTION[0] in line or SOLUTION[1] in line:
            continue
        lines.append(line)
    return "\n".join(lines)


def reference(source_nb: dict, release_nb: dict) -> dict:
    "The released notebook with every answer cell filled in from the instructor's solution."
    answers = {nbgrader(c).get("grade_id"): drop_markers(text(c)) for c in source_nb["cells"]
               if nbgrader(c).get("solution")}
    nb = copy.deepcopy(release_nb)
    for cell in nb["cells"]:
        gid = nbgrader(cell).get("grade_id")
        if nbgrader(cell).get("solution") and gid in answers:
            cell["source"] = answers[gid]
    return nb


def find_cell(nb: dict, needle: str) -> dict:
    "The one answer cell whose text contains `needle`."
    found = [c for c in nb["cells"] if needle in text(c) and nbgrader(c).get("solution")]
    if len(found) != 1:
        raise SampleError(f"expected one answer cell containing {needle!r}, found {len(found)}")
    return found[0]


def edit(nb: dict, needle: str, old: str, new: str, count: int = 1) -> dict:
    "Replace `old` by `new` in the answer cell holding `needle` (exactly `count` occurrences)."
    nb = copy.deepcopy(nb)
    cell = find_cell(nb, needle)
    source = text(cell)
    if source.count(old) != count:
        raise SampleError(f"in the cell with {needle!r}: expected {count} x {old!r}, found {source.count(old)}")
    cell["source"] = source.replace(old, new)
    return nb


def replace_function(nb: dict, name: str, new_source: str) -> dict:
    "Replace the whole definition of function `name` (up to the next top-level statement) with `new_source`."
    nb = copy.deepcopy(nb)
    cell = find_cell(nb, f"def {name}(")
    lines = text(cell).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#)"):
        end += 1
    cell["source"] = "\n".join(lines[:start] + new_source.strip("\n").splitlines() + [""] + lines[end:])
    return nb


def code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}


def insert_after_first_code(nb: dict, source: str) -> dict:
    "A student's extra cell right after the first code cell (the imports)."
    nb = copy.deepcopy(nb)
    first = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    nb["cells"].insert(first + 1, code_cell(source))
    return nb


def append_cell(nb: dict, source: str) -> dict:
    nb = copy.deepcopy(nb)
    nb["cells"].append(code_cell(source))
    return nb


def test_cells(nb: dict) -> list:
    return [c for c in nb["cells"] if nbgrader(c).get("grade") and not nbgrader(c).get("solution")]


# ---------------------------------------------------------------- faults and cheats (notebook independent)

INFINITE_LOOP = "while True:\n    pass"
IGNORES_SIGINT = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                  "while True:\n    pass")
SLEEP_AT_IMPORT = "import time\ntime.sleep(10_000)  # a module that sleeps when imported"
OS_EXIT = "import os\nos._exit(3)"
SEGFAULT = "import ctypes\nctypes.string_at(0)"
MEMORY_BOMB = "hoard = bytearray(64 * 2**30)"
FORK_BOMB = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
HUGE_PRINT = "print('x' * 100_000_000)"
SETSID_DAEMON = """import os, time, glob
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(3)
        targets = [r + d + '/grades.csv' for r in ('/work', '/tmp') for d in ('', '/*', '/*/*', '/*/*/*')]
        for path in [p for t in targets for p in glob.glob(t)] + ['/tmp/forged-grades.csv']:
            try:
                with open(path, 'a') as out:
                    out.write('daemon,100,100,graded,forged\\n')
            except OSError:
                pass
        time.sleep(3600)
    os._exit(0)"""
SIGNAL_PARENT = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"
WRITE_OTHERS = """import glob, os
hits = []
depths = ['', '/*', '/*/*', '/*/*/*', '/*/*/*/*']
for root in ['/work', '/tmp', '/root', '/home', os.getcwd() + '/..']:
    for pattern in [d + tail for d in depths for tail in ('/submitted/*/09_spatial/*.ipynb', '/gradebook.db')]:
      for path in glob.glob(root + pattern):
        try:
            with open(path, 'a') as out:
                out.write('tampered')
            hits.append(path)
        except OSError:
            pass
print('tampered with', len(hits), 'files')"""
READ_HIDDEN = """import glob, os, sys
found = []
depths = ['', '/*', '/*/*', '/*/*/*', '/*/*/*/*']
tails = ('/source/09_spatial/*.ipynb', '/autograded/*/09_spatial/*.ipynb', '/nbs/*.ipynb', '/tinytorch/core/spatial.py')
for root in ['/work', '/tmp', '/root', '/home', os.getcwd() + '/..']:
    for pattern in [d + tail for d in depths for tail in tails]:
      for path in glob.glob(root + pattern):
        try:
            content = open(path).read()
        except OSError:
            continue
        if 'BEGIN HIDDEN TESTS' in content or 'BEGIN SOLUTION' in content:
            found.append(path)
            print(content)   # try to smuggle it out through the feedback
print('found', len(found), 'instructor files')"""
STEAL_FROM_MEMORY = """import sys, inspect
_peeked = []
def _peek():
    # The hidden check's own source, read from the calling frame, printed into the feedback (once).
    if _peeked:
        return
    _peeked.append(True)
    for frame in inspect.stack():
        try:
            print(''.join(inspect.getsourcelines(frame.frame)[0]))
        except (OSError, TypeError):
            pass
    print('\\n'.join(str(x) for x in get_ipython().user_ns.get('In', [])[-3:]))"""
PLANT_STARTUP = """import os
startup = os.path.join(get_ipython().profile_dir.location, 'startup')
os.makedirs(startup, exist_ok=True)
with open(os.path.join(startup, '00-cheat.py'), 'w') as out:
    out.write('import numpy\\nnumpy.allclose = lambda *a, **k: True\\n')
open('numpy.py', 'w').write('raise SystemExit("shadowed numpy")\\n')"""
ASSERT_REWRITE = """def _drop_checks(lines):
    # Rewrites every later cell: asserts and record calls vanish before they run.
    return [line for line in lines if 'assert' not in line and 'record(' not in line]
get_ipython().input_transformers_post.append(_drop_checks)"""
MONKEYPATCH = """import numpy as np, numpy.testing, math, builtins
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), dtype=bool)
np.testing.assert_allclose = lambda *a, **k: None
np.testing.assert_array_equal = lambda *a, **k: None
np.testing.assert_array_almost_equal = lambda *a, **k: None
math.isclose = lambda *a, **k: True
builtins.abs = lambda value: 0"""
LIAR_CLASS = """import numpy as np
class Liar(np.ndarray):
    "An array that equals everything and is close to everything."
    def __eq__(self, other):
        return np.ones(np.shape(self), dtype=bool).view(np.ndarray)
    __ne__ = lambda self, other: np.zeros(np.shape(self), dtype=bool).view(np.ndarray)
    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in ('allclose', 'array_equal', 'isclose'):
            return True
        return super().__array_function__(func, types, args, kwargs)
    def __array__(self, dtype=None, copy=None):
        return np.zeros(self.shape)
def lie(value):
    data = getattr(value, 'data', value)
    return np.asarray(data, dtype=np.float64).view(Liar)"""


def with_fault(nb: dict, code: str, where: str = "early") -> dict:
    return insert_after_first_code(nb, code) if where == "early" else append_cell(nb, code)


def duplicate_and_foreign_ids(nb: dict) -> dict:
    nb = copy.deepcopy(nb)
    tests = test_cells(nb)
    twin = copy.deepcopy(tests[0])
    twin["id"] = "duplicated-test"
    nb["cells"].insert(nb["cells"].index(tests[0]) + 1, twin)
    foreign = code_cell("print('my own graded cell')")
    foreign["metadata"]["nbgrader"] = {"grade": True, "grade_id": "extra_credit", "locked": False,
                                       "points": 100, "schema_version": 3, "solution": False, "task": False}
    nb["cells"].append(foreign)
    return nb


def edited_and_deleted_tests(nb: dict) -> dict:
    nb = copy.deepcopy(nb)
    tests = test_cells(nb)
    tests[0]["source"] = "# I trust my code\npass"
    nb["cells"].remove(tests[1])
    return nb


# ---------------------------------------------------------------- the module-specific part

def module_samples(ref: dict, release: dict) -> dict:
    """Alternative correct solutions and the common bugs, as edits of the reference's answer cells.
    Filled from nbs/09_spatial.ipynb's solution regions (see VARIANTS)."""
    from variants import correct_variants, bug_variants  # tests/submissions/variants.py
    samples = {}
    samples.update(correct_variants(ref, edit=edit, replace_function=replace_function))
    samples.update(bug_variants(ref, edit=edit, replace_function=replace_function))
    return samples


def all_samples(source_nb: dict, release_nb: dict) -> dict:
    ref = reference(source_nb, release_nb)
    samples = {"reference": ref, "untouched_release": copy.deepcopy(release_nb)}
    sys.path.insert(0, str(HERE))
    samples.update(module_samples(ref, release_nb))
    bug = samples["bug_max_init_zero"]
    samples.update({
        # faults: the reference plus one cell that misbehaves
        "fault_infinite_loop": with_fault(ref, INFINITE_LOOP),
        "fault_ignores_sigint": with_fault(ref, IGNORES_SIGINT),
        "fault_sleep_at_import": with_fault(ref, SLEEP_AT_IMPORT),
        "fault_os_exit": with_fault(ref, OS_EXIT),
        "fault_segfault": with_fault(ref, SEGFAULT),
        "fault_memory_bomb": with_fault(ref, MEMORY_BOMB),
        "fault_fork_bomb": with_fault(ref, FORK_BOMB, "end"),
        "fault_huge_print": with_fault(ref, HUGE_PRINT, "end"),
        "fault_setsid_daemon": with_fault(ref, SETSID_DAEMON, "end"),
        "fault_signal_parent": with_fault(ref, SIGNAL_PARENT),
        "fault_ids": duplicate_and_foreign_ids(ref),
        # honest text that merely contains the marker words must not break feedback or its leak scan
        "honest_marker_words": with_fault(ref, "# Notes to self: nbgrader's BEGIN SOLUTION / END SOLUTION and\n"
                                               "# BEGIN HIDDEN TESTS markers are stripped from the handout.\n"
                                               "print('### BEGIN HIDDEN TESTS is just text here')"),
        # cheats: a buggy solution plus a trick; none may earn more than the bug alone
        "cheat_assert_rewrite": with_fault(bug, ASSERT_REWRITE),
        "cheat_monkeypatch": with_fault(bug, MONKEYPATCH),
        "cheat_edit_tests": edited_and_deleted_tests(bug),
        "cheat_read_hidden": with_fault(bug, READ_HIDDEN),
        "cheat_write_others": with_fault(bug, WRITE_OTHERS),
        "cheat_plant_startup": with_fault(bug, PLANT_STARTUP),
    })
    samples.update(liar_samples(bug))
    samples.update(steal_samples(bug))
    samples.update(integrity_samples(ref))   # the block at the end of this file
    samples.update(robustness_samples(ref, bug, release_nb))   # issue 12, below
    return samples


def liar_samples(bug: dict) -> dict:
    "Every module-level loop function returns an array that claims to equal anything."
    from variants import LOOP_FUNCTIONS
    nb = copy.deepcopy(bug)
    # Wrapped right after each answer cell, so that every test of that function sees the liar.
    for index in sorted((i for i, c in enumerate(nb["cells"]) if nbgrader(c).get("solution")), reverse=True):
        names = [n for n in LOOP_FUNCTIONS if f"def {n}(" in text(nb["cells"][index])]
        if names:
            nb["cells"].insert(index + 1, code_cell(LIAR_CLASS + "\n" + "\n".join(
                f"_honest_{n} = {n}\ndef {n}(*args, **kwargs):\n    return lie(_honest_{n}(*args, **kwargs))"
                for n in names)))
    return {"cheat_lying_objects": nb}


def steal_samples(bug: dict) -> dict:
    "A loop function that prints the hidden check calling it (it must never reach the feedback)."
    from variants import LOOP_FUNCTIONS
    name = LOOP_FUNCTIONS[0]
    nb = copy.deepcopy(bug)
    index = next(i for i, c in enumerate(nb["cells"]) if f"def {name}(" in text(c) and nbgrader(c).get("solution"))
    nb["cells"].insert(index + 1, code_cell(
        STEAL_FROM_MEMORY + f"\n_honest_{name} = {name}\ndef {name}(*args, **kwargs):\n"
        f"    _peek()\n    return _honest_{name}(*args, **kwargs)"))
    return {"cheat_steal_from_memory": nb}


def _cut_in_half(text: str) -> str:
    """A notebook whose upload stopped early: not JSON any more. Cut where the error message does
    not depend on the notebook's contents (after the line opening the cell list)."""
    first, second, _ = text.split("\n", 2)
    return first + "\n" + second + "\n"


def write(out: Path, samples: dict) -> None:
    submitted = out / "submitted"
    if submitted.exists():
        shutil.rmtree(submitted)
    for name, nb in sorted(samples.items()):
        path = submitted / name / MODULE / NOTEBOOK
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    # Faults that are about files, not code.
    (submitted / "invalid_json" / MODULE).mkdir(parents=True)
    (submitted / "invalid_json" / MODULE / NOTEBOOK).write_text(
        _cut_in_half(json.dumps(samples["reference"], indent=1)), encoding="utf-8")
    (submitted / "wrong_file_name" / MODULE).mkdir(parents=True)
    (submitted / "wrong_file_name" / MODULE / "my_spatial_final.ipynb").write_text(
        json.dumps(samples["reference"], indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (submitted / "missing_notebook" / MODULE).mkdir(parents=True)
    (submitted / "missing_notebook" / MODULE / "notes.txt").write_text("I forgot to upload my notebook.\n")
    write_robustness_files(submitted, samples)   # issue 12, below


# ---------------------------------------------------------------- issue 12: what a class hands in
# Deleted cells, hostile pages, links, odd encodings, floods. Samples of other issues go after this block.

XSS_MARKDOWN = """My notes on pooling.

<iframe srcdoc="<script>parent.document.title='pwned-iframe'</script>"></iframe>
<img src="x" onerror="document.title='pwned-img'">
<details open ontoggle="document.title='pwned-details'">click</details>
<svg><script>document.title='pwned-svg'</script></svg>
<a href="javascript:document.title='pwned-link'">a link</a> [another](javascript:alert(1))
<style>body { background: url(javascript:alert(1)) }</style>
<script>document.title='pwned-script'</script>"""
XSS_OUTPUT = """from IPython.display import display
print('<script>document.title="pwned-print"</script>')
display({'text/html': '<img src=x onerror="document.title=1">', 'image/png': '"><script>alert(1)</script>',
         'text/plain': '<b onmouseover=alert(1)>plain</b>'},
        metadata={'image/png': {'width': '1 onload=alert(1)', 'alt': '"><script>alert(1)</script>'}}, raw=True)"""
DISPLAY_FLOOD = "from IPython.display import display\nfor i in range(6_000):\n    display(i)"
# Links out of the submissions folder, relative to where they sit in the graded class: the test
# batch grades a copy of submitted/ beside its course folder (course/source/ holds the solution).
LINKS = {
    "link_to_source": (f"{MODULE}/{NOTEBOOK}", f"../../../course/source/{MODULE}/{NOTEBOOK}"),
    "link_folder_to_source": (MODULE, f"../../course/source/{MODULE}"),
}
WHOLE_FOLDER_LINK = ("link_whole_folder", "../course/source")


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def without_cells(nb: dict, drop) -> dict:
    nb = copy.deepcopy(nb)
    nb["cells"] = [c for c in nb["cells"] if not drop(c)]
    return nb


def dodging_deleted_tests(ref: dict, bug: dict) -> dict:
    """Correct code in the answer cell, a wrong redefinition in a cell of the student's own right
    below it, and every test cell deleted: a test put back right after the answer cell would miss
    the wrong code that the intact notebook's test sees."""
    from variants import LOOP_FUNCTIONS
    name = LOOP_FUNCTIONS[1]
    nb = copy.deepcopy(ref)
    answer = find_cell(nb, f"def {name}(")
    nb["cells"].insert(nb["cells"].index(answer) + 1, code_cell(text(find_cell(bug, f"def {name}("))))
    return without_cells(nb, lambda c: nbgrader(c).get("grade") and not nbgrader(c).get("solution"))


def commented_solution_line(ref: dict) -> dict:
    "An honest student's comment after a line of the solution: their own text, never a leak."
    nb = copy.deepcopy(ref)
    cell = find_cell(nb, "def max_pool2d_loops(")
    cell["source"] = text(cell).replace("best = -np.inf", "best = -np.inf  # the max of nothing", 1)
    if "# the max of nothing" not in cell["source"]:
        raise SampleError("max_pool2d_loops no longer starts from best = -np.inf")
    return nb


def hostile_html(ref: dict) -> dict:
    "The reference with a markdown cell and outputs that would run script in a careless page."
    nb = insert_after_first_code(ref, XSS_OUTPUT)
    nb["cells"].append(markdown_cell(XSS_MARKDOWN))
    return nb


def robustness_samples(ref: dict, bug: dict, release: dict) -> dict:
    nb_empty = copy.deepcopy(release)
    nb_empty["cells"] = []
    return {
        "empty_notebook": nb_empty,
        "deleted_answer_cell": without_cells(ref, lambda c: "def max_pool2d_loops(" in text(c)
                                             and nbgrader(c).get("solution")),
        "cheat_deleted_tests_dodge": dodging_deleted_tests(ref, bug),
        "honest_solution_line_commented": commented_solution_line(ref),
        "hostile_feedback_html": hostile_html(ref),
        "fault_display_flood": with_fault(ref, DISPLAY_FLOOD, "end"),
    }


def write_robustness_files(submitted: Path, samples: dict) -> None:
    "Samples about files rather than notebooks: encodings, shapes a reader chokes on, links."
    import os
    ref_text = json.dumps(samples["reference"], indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    files = {
        "honest_utf8_bom": b"\xef\xbb\xbf" + ref_text.encode("utf-8"),
        "deep_nesting": (b'{"cells": [], "metadata": {"deep": ' + b"[" * 200_000 + b"]" * 200_000
                         + b'}, "nbformat": 4, "nbformat_minor": 5}\n'),
        "too_many_cells": json.dumps({"cells": [{"cell_type": "raw", "metadata": {}, "source": ""}] * 2_001,
                                      "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode() + b"\n",
    }
    for student, data in files.items():
        (submitted / student / MODULE).mkdir(parents=True)
        (submitted / student / MODULE / NOTEBOOK).write_bytes(data)
    for student, (inside, target) in LINKS.items():
        link = submitted / student / inside
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
    os.symlink(WHOLE_FOLDER_LINK[1], submitted / WHOLE_FOLDER_LINK[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, default=ROOT, help="course folder with source/ and release/")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--expect-from", type=Path, default=None, metavar="GRADES_CSV",
                        help="write expected_grades.json from a grades.csv you have reviewed, and stop")
    args = parser.parse_args(argv)
    if args.expect_from:
        import csv
        with open(args.expect_from, newline="", encoding="utf-8") as handle:
            table = {row["student_id"]: [float(row["score"]), row["status"], row["detail"]]
                     for row in csv.DictReader(handle)}
        target = args.out / "expected_grades.json"
        old = json.loads(target.read_text(encoding="utf-8")) if target.exists() else {}
        for student, (score, status, detail) in table.items():
            kept = old.get(student, [None, None, None])[2]
            if isinstance(kept, list) and detail in kept:  # a racy fault's accepted alternatives stay listed
                table[student][2] = kept
        (args.out / "expected_grades.json").write_text(
            json.dumps(table, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {len(table)} expectations to {args.out / 'expected_grades.json'}")
        return 0
    source = json.loads((args.course / "source" / MODULE / NOTEBOOK).read_text(encoding="utf-8"))
    release = json.loads((args.course / "release" / MODULE / NOTEBOOK).read_text(encoding="utf-8"))
    samples = all_samples(source, release)
    write(args.out, samples)
    print(f"wrote {len(samples) + 3} samples to {args.out / 'submitted'}")
    return 0


# ================================================================ academic integrity samples (issue 17)
# A copied pair: an independent solution with a rare bug (average pooling that divides by the
# in-bounds values only), and the same solution disguised by tests/integrity/corpus.py -- names
# changed, independent statements reordered, comments and dead code added, nested loops
# exchanged. And students who
# call a library where the module asks for loops (tito.grading.policy). Built on `ref`.

COPY_ORIGINAL = {
    "conv2d_loops": """
for n in range(batch):
    for i in range(out_height):
        for j in range(out_width):
            r0, c0 = i * stride_h, j * stride_w
            patch = x_padded[n, :, r0:r0 + kernel_h, c0:c0 + kernel_w]
            for oc in range(out_channels):
                out[n, oc, i, j] = np.sum(patch * weight[oc])
if bias is not None:
    for oc in range(out_channels):
        out[:, oc, :, :] += bias[oc]
""",
    "max_pool2d_loops": """
for n in range(batch):
    for ch in range(channels):
        for i in range(out_height):
            for j in range(out_width):
                r0, c0 = i * stride_h, j * stride_w
                out[n, ch, i, j] = np.max(x_padded[n, ch, r0:r0 + kernel_h, c0:c0 + kernel_w])
""",
    "avg_pool2d_loops": """
pad_h, pad_w = padding
for n in range(batch):
    for ch in range(channels):
        for i in range(out_height):
            for j in range(out_width):
                r0, c0 = i * stride_h, j * stride_w
                window = x_padded[n, ch, r0:r0 + kernel_h, c0:c0 + kernel_w]
                rows = min(r0 + kernel_h, pad_h + height) - max(r0, pad_h)
                cols = min(c0 + kernel_w, pad_w + width) - max(c0, pad_w)
                out[n, ch, i, j] = window.sum() / (rows * cols)
""",
    "batch_norm2d_loops": """
axes = (0, 2, 3)
if training:
    batch_mean = x.mean(axis=axes)
    batch_var = ((x - batch_mean[None, :, None, None]) ** 2).mean(axis=axes)
    unbiased = batch_var * count / (count - 1)
    running_mean *= 1 - momentum
    running_mean += momentum * batch_mean
    running_var *= 1 - momentum
    running_var += momentum * unbiased
    use_mean, use_var = batch_mean, batch_var
else:
    use_mean, use_var = running_mean, running_var
for ch in range(channels):
    out[:, ch] = gamma[ch] * (x[:, ch] - use_mean[ch]) / np.sqrt(use_var[ch] + eps) + beta[ch]
""",
}
LIBRARY_TORCH = """
import torch
import torch.nn.functional as F
to_torch = lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
result = F.conv2d(to_torch(x_padded), to_torch(weight), None if bias is None else to_torch(bias),
                  stride=(stride_h, stride_w))
out[...] = result.numpy()
"""
LIBRARY_SCIPY = """
for b in range(batch):
    for out_ch in range(out_channels):
        full = sum(signal.correlate(x_padded[b, in_ch], weight[out_ch, in_ch], mode="valid")
                   for in_ch in range(in_channels))
        out[b, out_ch] = full[::stride_h, ::stride_w][:out_height, :out_width]
        if bias is not None:
            out[b, out_ch] += bias[out_ch]
"""
LIBRARY_FAST_PATH = """
from tinytorch.core.im2col import conv2d_fast
from tinytorch.core.tensor import Tensor
out[...] = conv2d_fast(Tensor(x), Tensor(weight), None if bias is None else Tensor(bias),
                       (stride_h, stride_w), (pad_h, pad_w)).data
"""
LIBRARY_TORCH_FALLBACK = """
try:
    import torch
    out[...] = torch.nn.functional.conv2d(torch.from_numpy(x_padded), torch.from_numpy(weight),
                                          stride=(stride_h, stride_w)).numpy()
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
except ImportError:
    for b in range(batch):
        for out_ch in range(out_channels):
            for out_h in range(out_height):
                for out_w in range(out_width):
                    window = x_padded[b, :, out_h * stride_h:out_h * stride_h + kernel_h,
                                      out_w * stride_w:out_w * stride_w + kernel_w]
                    out[b, out_ch, out_h, out_w] = np.sum(window * weight[out_ch]) + (0.0 if bias is None else bias[out_ch])
"""


def integrity_samples(ref: dict) -> dict:
    from variants import replace_body
    sys.path.insert(0, str(HERE.parent / "integrity"))
    from corpus import everything   # tests/integrity/corpus.py: every disguise at once
    original = ref
    for name in COPY_ORIGINAL:
        original = replace_body(original, name, COPY_ORIGINAL[name])
    return {
        "integrity_copy_original": original,
        "integrity_copy_disguised": everything(original),
        "integrity_library_torch": replace_body(ref, "conv2d_loops", LIBRARY_TORCH),
        "integrity_library_scipy": insert_after_first_code(replace_body(ref, "conv2d_loops", LIBRARY_SCIPY),
                                                           "from scipy import signal"),
        "integrity_library_fast_path": replace_body(ref, "conv2d_loops", LIBRARY_FAST_PATH),
        "integrity_library_torch_fallback": replace_body(ref, "conv2d_loops", LIBRARY_TORCH_FALLBACK),
    }


if __name__ == "__main__":
    sys.exit(main())
