"""Academic integrity: similar submissions (tito.grading.similarity) and the library-use
policy (tito.grading.policy): the corpus of disguised copies, hostile text on the pages,
the static scan, the sandbox that hides forbidden modules, and grading under each `on_use`."""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from tito.grading import policy as policy_module
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for, load_assignment
from tito.grading.policy import Policy, apply, bwrap_hiding, load_policy, scan
from tito.grading.similarity import (SimilaritySettings, compare_class, format_report, kgram_hashes,
                                          load_similarity_settings, normalise, winnow)
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrity"))
import corpus  # noqa: E402  (tests/integrity/corpus.py)

SAMPLES = ROOT / "tests" / "submissions" / "submitted"
FAST = dict(cell_timeout=20, submission_timeout=120, memory_mb=2048)
REASON = "conv2d_loops calls torch.nn.functional.conv2d, torch.from_numpy: this module asks for loops"


# ---------------------------------------------------------------- normalisation and winnowing

def norms(text: str) -> list:
    return [token[0] for token in normalise(text)]


def test_names_literals_comments_docstrings_and_layout_are_set_aside():
    one = 'def f(x):\n    "Sum."\n    total = 0.0  # start\n    for i in range(3):\n        total += x[i] * 2\n    return total\n'
    two = ("def g(values):\n    '''Add them all up,\n    twice.'''\n    acc   =   1\n\n    # loop\n"
           "    for k in range(10):\n        acc += values[k] * 7.5\n    return acc\n")
    assert norms(one) == norms(two)
    assert "N" in norms(one) and "0" in norms(one) and "S" not in norms(one)
    # structure still counts: a statement moved out of the loop is different code
    moved = 'def f(x):\n    total = 0.0\n    for i in range(3):\n        pass\n    total += x[i] * 2\n    return total\n'
    assert norms(moved) != norms(one)


def test_code_that_does_not_tokenise_keeps_what_came_before():
    assert norms("a = 1\nb = (2,\n")[:4] == ["N", "=", "0", ";"]
    assert norms("%timeit f(x)\ny = 2\n") == ["N", "=", "0", ";"]


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=0, max_size=60), st.lists(st.integers(0, 30), min_size=0, max_size=60),
       st.lists(st.integers(0, 30), min_size=13, max_size=40))
def test_winnowing_always_finds_a_match_of_k_plus_window_minus_1_tokens(before, after, shared):
    k, window = 10, 4
    one = [f"t{t}" for t in before + shared]
    two = [f"t{t}" for t in shared + after]
    pick = lambda tokens: set(kgram_hashes(tokens, k)[winnow(kgram_hashes(tokens, k), window)].tolist())
    assert pick(one) & pick(two)


def test_hashes_are_the_same_in_every_run():
    tokens = norms("for i in range(n):\n    total += x[i] * w[i]\n")
    assert kgram_hashes(tokens, 5).tolist() == kgram_hashes(list(tokens), 5).tolist()
    assert kgram_hashes(tokens, 5).dtype == np.uint64


# ---------------------------------------------------------------- the corpus

@pytest.fixture(scope="module")
def corpus_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    copies = corpus.write_corpus(folder / "submitted")
    report = compare_class(folder / "submitted", ROOT, out=folder)
    pairs = {frozenset((p.a, p.b)): p for p in report.pairs}
    return SimpleNamespace(report=report, copies=copies, pairs=pairs, folder=folder)


def test_every_disguised_copy_is_found_with_its_original(corpus_report):
    missed = [(copy, original) for copy, original in corpus_report.copies.items()
              if frozenset((copy, original)) not in corpus_report.pairs]
    assert not missed
    assert len(corpus_report.copies) == len(corpus.ORIGINALS) * len(corpus.DISGUISES) == 15


def test_independent_solutions_and_the_untouched_release_are_not_paired(corpus_report):
    honest = set(corpus.HONEST)
    assert [p for key, p in corpus_report.pairs.items() if key <= honest] == []
    assert "untouched_release" in corpus_report.report.skipped
    assert not any("untouched_release" in key for key in corpus_report.pairs)
    # copies of different originals are not each other's copies either
    for key in corpus_report.pairs:
        originals = {corpus_report.copies.get(s, s) for s in key}
        assert len(originals) == 1, key


def test_pairs_are_ranked_and_each_has_a_page_highlighting_the_match(corpus_report):
    report = corpus_report.report
    similarities = [p.similarity for p in report.pairs]
    assert similarities == sorted(similarities, reverse=True)
    assert all(p.similarity >= load_similarity_settings(ROOT).threshold for p in report.pairs)
    index = (corpus_report.folder / "similarity" / "index.html").read_text(encoding="utf-8")
    for pair in report.pairs:
        page = (corpus_report.folder / "similarity" / pair.page).read_text(encoding="utf-8")
        assert pair.page in index and "<mark" in page
    stored = json.loads((corpus_report.folder / "similarity" / "report.json").read_text(encoding="utf-8"))
    assert len(stored["pairs"]) == len(report.pairs) and stored["wrong_values_checked"] is False


def test_student_text_on_the_pages_and_in_the_terminal_is_escaped(tmp_path):
    hostile = '<b onmouseover=alert(1)>x\x1b[31m'
    nb = corpus.load("integrity_copy_original")
    for cell in corpus.answer_cells(nb)[:1]:
        cell["source"] = "".join(cell["source"]) + ("\n# </pre><script>alert(1)</script>\n"
                                                    "label = '</pre><img src=x onerror=alert(2)>'\n")
    for student in ("a", hostile):
        corpus._write(tmp_path / "submitted", student, corpus.rename(nb) if student == "a" else nb)
    report = compare_class(tmp_path / "submitted", ROOT, out=tmp_path)
    assert len(report.pairs) == 1
    for page in (tmp_path / "similarity").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text and "<img" not in text and "<b onmouseover" not in text, page.name
        assert "Content-Security-Policy" in text
    shown = (tmp_path / "similarity" / report.pairs[0].page).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)" in shown and "&lt;b onmouseover=alert(1)&gt;" in shown
    assert "\x1b" not in format_report(report)


def test_unreadable_and_oversized_notebooks_are_skipped_with_the_reason(tmp_path):
    from tito.grading.model import Submission
    from tito.grading.similarity import class_documents
    assignment = load_assignment(ROOT, "09_spatial", "09_spatial.ipynb")
    (tmp_path / "broken.ipynb").write_text("{not json", encoding="utf-8")
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (2 * 2**20))
    subs = [Submission("broken", tmp_path / "broken.ipynb"), Submission("big", big), Submission("gone", None, "no 09_spatial/")]
    documents, _, skipped = class_documents(subs, assignment, SimilaritySettings(), max_notebook_mb=1)
    assert documents == []
    assert skipped["broken"].startswith("not read: not JSON (line 1")
    assert skipped["big"].startswith("not read: the notebook is 2 MiB, above the 1 MiB")
    assert skipped["gone"] == "no 09_spatial/"


def test_bad_similarity_settings_are_refused_naming_the_key(tmp_path):
    (tmp_path / "settings.ini").write_text("[similarity]\nk = twelve\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[similarity\] k must be an integer from 2 to 200, got 'twelve'"):
        load_similarity_settings(tmp_path)
    (tmp_path / "settings.ini").write_text("[similarity]\nthreshold = 1.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="threshold must be a number from 0.0 to 1.0, got '1.5'"):
        load_similarity_settings(tmp_path)
    (tmp_path / "settings.ini").write_text("[course]\n", encoding="utf-8")
    assert load_similarity_settings(tmp_path) == SimilaritySettings()


def test_tito_similarity_prints_the_section_and_writes_the_pages(corpus_report, tmp_path, capsys):
    from tito.cli import main
    assert main(["similarity", str(corpus_report.folder / "submitted"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "similar code (≥ 65%, k 10, window 4): " in printed
    assert "the same wrong recorded values: not checked (no graded course folder)" in printed
    assert printed.count("    group of 6: ") == len(corpus.ORIGINALS)   # each original with its 5 copies
    assert (tmp_path / "similarity" / "index.html").exists()
    assert main(["similarity", str(corpus_report.folder / "submitted"), "--threshold", "2"]) == 2
    assert "--threshold must be from 0 to 1, got 2" in capsys.readouterr().err


def test_tito_similarity_refuses_a_course_folder_that_was_not_graded(tmp_path, capsys):
    from tito.cli import main
    assert main(["similarity", str(SAMPLES), "--course", str(tmp_path)]) == 1
    assert "not a graded course folder (expected autograded/ in it" in capsys.readouterr().err
    assert main(["similarity", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "is not a folder of submissions" in capsys.readouterr().err


# ---------------------------------------------------------------- the static scan

CHECKS = {"conv2d_loops": ["conv2d_loops"], "max_pool2d_loops": ["max_pool2d_loops"]}
SCANS = {
    "alias in the function": (["def conv2d_loops(x, w):\n    import torch\n    import torch.nn.functional as F\n"
                               "    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()\n"],
                              ["torch.nn.functional.conv2d", "torch.from_numpy"], []),
    "import in another cell": (["from scipy import signal\n",
                                "def conv2d_loops(x, w):\n    return signal.correlate(x, w, mode='valid')\n"],
                               ["scipy.signal.correlate"], []),
    "the course's fast path": (["def conv2d_loops(x, w):\n    from tinytorch.core.im2col import conv2d_fast\n"
                                "    return conv2d_fast(x, w, None, (1, 1), (0, 0)).data\n"],
                               ["tinytorch.core.im2col.conv2d_fast"], []),
    "through a helper": (["import scipy.ndimage as nd\ndef _smooth(a):\n    return nd.correlate(a, a)\n"
                          "def conv2d_loops(x, w):\n    return _smooth(x)\n"], ["scipy.ndimage.correlate"], ["_smooth"]),
    "import by name": (["def conv2d_loops(x, w):\n    t = __import__('torch')\n    return t.conv2d(x, w)\n"],
                       ["torch"], []),
    "importlib": (["import importlib\ndef conv2d_loops(x, w):\n    return importlib.import_module('jax').numpy.x\n"],
                  ["jax"], []),
    "a lambda": (["import torch\nconv2d_loops = lambda x, w: torch.conv2d(x, w)\n"], ["torch.conv2d"], []),
    "rebound": (["import torch.nn.functional as F\nconv2d_loops = F.conv2d\n"], ["torch.nn.functional.conv2d"], []),
    "star import": (["from torch.nn.functional import *\ndef conv2d_loops(x, w):\n    return conv2d(x, w)\n"],
                    ["torch.nn.functional"], []),
}


@pytest.mark.parametrize("case", sorted(SCANS))
def test_the_scan_names_what_a_graded_function_reaches(case):
    texts, names, via = SCANS[case]
    findings = scan(texts, Policy(), CHECKS)
    graded = [f for f in findings if f.function]
    assert [(f.function, f.names, f.via, f.cells) for f in graded] == [("conv2d_loops", names, via, ["conv2d_loops"])]
    assert graded[0].reason.startswith(f"conv2d_loops calls {names[0]}")
    assert graded[0].reason.endswith(": this module asks for loops")


def test_the_scan_leaves_loops_numpy_and_sliding_windows_alone():
    texts = ["import numpy as np\nfrom numpy.lib.stride_tricks import sliding_window_view\n",
             "def conv2d_loops(x, w):\n    out = np.zeros(3)\n    for i in range(3):\n"
             "        out[i] = sliding_window_view(x, (2, 2)).sum() * w[i]\n    return out\n",
             "def broken(:\n"]
    assert scan(texts, Policy(), CHECKS) == []


def test_a_star_import_counts_only_for_functions_that_call_a_name_nothing_else_defines():
    texts = ["from torch.nn.functional import *\ndef helper(a):\n    return a\n",
             "def conv2d_loops(x, w):\n    y = pad_input(helper(x), 1)\n    return np.zeros(len(y))\n",
             "def max_pool2d_loops(x, k):\n    return max_pool2d(x, k)\n"]
    findings = scan(texts, Policy(), CHECKS, known=frozenset({"pad_input", "np"}))
    assert [(f.function, f.names) for f in findings] == [("max_pool2d_loops", ["torch.nn.functional"])]


def test_forbidden_code_outside_the_graded_functions_is_reported_but_scores_nothing():
    texts = ["import torch\nprint(torch.nn.functional.conv2d(a, b))\n", "def conv2d_loops(x, w):\n    return x\n"]
    findings = scan(texts, Policy(), CHECKS)
    assert [(f.function, f.names, f.cells) for f in findings] == [("", ["torch.nn.functional.conv2d"], [])]
    assert apply(findings, {"conv2d_loops": 10.0}, {}) == ({"conv2d_loops": 10.0}, {})


@pytest.mark.parametrize("on_use, points", [("flag", 10.0), ("zero_cell", 0.0)])
def test_on_use_decides_the_points_and_the_reason_comes_first(on_use, points):
    findings = scan(SCANS["alias in the function"][0], Policy(on_use=on_use), CHECKS)
    scored, messages = apply(findings, {"conv2d_loops": 10.0, "max_pool2d_loops": 8.0},
                             {"conv2d_loops": ["NameError: name 'F' is not defined"]})
    assert scored == {"conv2d_loops": points, "max_pool2d_loops": 8.0}
    assert messages["conv2d_loops"] == [REASON, "NameError: name 'F' is not defined"]
    assert findings[0].as_flag() == {"kind": "library_use", "function": "conv2d_loops",
                                     "names": ["torch.nn.functional.conv2d", "torch.from_numpy"], "via": [],
                                     "cells": ["conv2d_loops"], "action": on_use}


def test_the_checks_of_each_function_come_from_the_source_notebook():
    assignment = load_assignment(ROOT, "09_spatial", "09_spatial.ipynb")
    checks = policy_module.checks_of(assignment.source, Policy().functions)
    assert checks == {"conv2d_loops": ["conv2d_loops"], "max_pool2d_loops": ["max_pool2d_loops"],
                      "avg_pool2d_loops": ["avg_pool2d_loops"],
                      "batch_norm2d_loops": ["batchnorm_train", "batchnorm_eval"]}


def test_the_policy_is_read_from_settings_and_bad_values_are_refused(tmp_path):
    assert load_policy(ROOT) == Policy()
    (tmp_path / "settings.ini").write_text("[policy]\non_use = warn\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[policy\] on_use must be one of flag \| zero_cell, got 'warn'"):
        load_policy(tmp_path)
    (tmp_path / "settings.ini").write_text("[policy]\nforbidden = torch, scipy signal\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"forbidden must be dotted Python names .* got \['scipy signal'\]"):
        load_policy(tmp_path)
    assert Policy(on_use="flag").digest() != Policy().digest()


# ---------------------------------------------------------------- the sandbox: not there for the kernel

def test_a_sandboxed_kernel_cannot_reach_forbidden_modules_in_any_way():
    from tito.grading.sandbox import KernelLimits, execute_notebook, sandbox_available
    assert sandbox_available()[0], sandbox_available()[1]
    import torch
    torch_dir = Path(torch.__file__).resolve().parent
    assert any(str(torch_dir) == arg for arg in bwrap_hiding(("torch",)))
    cells = ["import torch",
             "import scipy.signal",
             "import scipy\nscipy.ndimage",
             f"import importlib.util\nspec = importlib.util.spec_from_file_location('t', {str(torch_dir / '__init__.py')!r})\n"
             "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)",
             f"import os\nprint(sorted(os.listdir({str(torch_dir)!r})), os.path.exists({str(torch_dir / 'lib')!r}))",
             "import numpy, scipy.sparse\nfrom numpy.lib.stride_tricks import sliding_window_view\nprint('allowed')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with tempfile.TemporaryDirectory() as work:
        os.chmod(work, 0o777)
        limits = KernelLimits(sandbox=True, hidden_modules=Policy().forbidden, **FAST)
        result = execute_notebook(nb, Path(work), limits)
    outputs = [cell.outputs for cell in result.notebook.cells]
    for index, module in ((0, "torch"), (1, "scipy.signal"), (2, "scipy.ndimage"), (3, "torch")):
        assert outputs[index][-1]["ename"] == "ModuleNotFoundError", index
        assert f"{module} is not available to graded notebooks" in outputs[index][-1]["evalue"]
    assert outputs[4][0]["text"] == "['__init__.py'] False\n"
    assert outputs[5][0]["text"] == "allowed\n"


# ---------------------------------------------------------------- grading under the policy

INTEGRITY = ("reference", "integrity_library_torch", "integrity_library_torch_fallback", "integrity_copy_original",
             "integrity_copy_disguised", "correct_other_loop_order")


@pytest.fixture(scope="module")
def flagged_batch(tmp_path_factory):
    "The integrity samples graded (sandboxed) under on_use = flag."
    work = tmp_path_factory.mktemp("integrity")
    for student in INTEGRITY:
        shutil.copytree(SAMPLES / student, work / "submitted" / student)
    settings = load_settings(ROOT)
    original = policy_module.load_policy
    policy_module.load_policy = lambda root: Policy(on_use="flag")
    try:
        report = grade_batch(work / "submitted", ROOT, work / "course", settings,
                             limits_for(settings, sandbox=True, **FAST), jobs=2, progress=False)
    finally:
        policy_module.load_policy = original
    return SimpleNamespace(work=work, out=work / "course", results={r.student: r for r in report.results})


def test_flag_keeps_the_points_earned_and_names_the_library(flagged_batch):
    results = flagged_batch.results
    fallback, torch_user = results["integrity_library_torch_fallback"], results["integrity_library_torch"]
    # The fallback loops ran (torch is not there for the kernel): full points, and the attempt named.
    assert (fallback.score, fallback.detail) == (60.0, REASON + " [conv2d_loops]")
    assert fallback.flags == [{"kind": "library_use", "function": "conv2d_loops",
                               "names": ["torch.nn.functional.conv2d", "torch.from_numpy"], "via": [],
                               "cells": ["conv2d_loops"], "action": "flag"}]
    assert torch_user.score == 32.0 and torch_user.detail.startswith(REASON + " [conv2d_loops]; ModuleNotFoundError")
    for honest in ("reference", "correct_other_loop_order", "integrity_copy_original"):
        assert results[honest].flags == [] and "asks for loops" not in results[honest].detail
    assert results["reference"].score == results["correct_other_loop_order"].score == 60.0


def test_the_feedback_names_the_library_and_the_journal_keeps_the_flag(flagged_batch):
    page = (flagged_batch.out / "feedback" / "integrity_library_torch" / "09_spatial.html").read_text(encoding="utf-8")
    assert "conv2d_loops calls torch.nn.functional.conv2d, torch.from_numpy: this module asks for loops" in page
    journal = json.loads((flagged_batch.out / ".tito-grade" / "results" / "integrity_library_torch.json").read_text())
    assert journal["flags"][0]["names"][0] == "torch.nn.functional.conv2d"
    assert journal["policy"] == Policy(on_use="flag").digest()


def test_the_copied_pair_shares_code_and_wrong_values_and_the_summary_shows_both(flagged_batch):
    from tito.commands.integrity import summary_section
    report = compare_class(flagged_batch.work / "submitted", ROOT, course=flagged_batch.out, out=flagged_batch.out)
    code = {frozenset((p.a, p.b)) for p in report.pairs}
    assert frozenset(("integrity_copy_original", "integrity_copy_disguised")) in code
    assert frozenset(("reference", "correct_other_loop_order")) not in code
    assert report.wrong_values_checked
    assert [(w.a, w.b) for w in report.wrong] == [("integrity_copy_disguised", "integrity_copy_original")]
    # (every check runs on its own, so the rare average-pooling bug shows in both cells that record it)
    assert {check for check, _, _ in report.wrong[0].records} == {"avg_pool2d_loops", "pooling_layers"}
    text = summary_section(flagged_batch.work / "submitted", ROOT, flagged_batch.out)
    assert "integrity_copy_disguised ~ integrity_copy_original" in text
    assert "integrity_library_torch: conv2d_loops calls torch.nn.functional.conv2d" in text
    assert (flagged_batch.out / "similarity" / "index.html").exists()


def test_without_the_sandbox_nothing_is_hidden_and_zero_cell_still_applies(tmp_path):
    shutil.copytree(SAMPLES / "integrity_library_torch", tmp_path / "submitted" / "integrity_library_torch")
    settings = load_settings(ROOT)
    report = grade_batch(tmp_path / "submitted", ROOT, tmp_path / "course", settings,
                         limits_for(settings, sandbox=False, **FAST), jobs=1, progress=False)
    result = report.results[0]
    # torch is installed and unconfined kernels reach it: its conv2d passes every check, but the
    # policy's static scan zeroes the cell that checks conv2d_loops (on_use = zero_cell).
    assert result.detail == f"sandbox off; {REASON} [conv2d_loops]"
    assert (result.score, result.cells["conv2d_loops"], result.cells["conv2d_layer"]) == (50.0, 0.0, 6.0)


def test_a_changed_policy_regrades_and_the_same_policy_reuses(flagged_batch, tmp_path):
    # (last of the flagged batch's tests: it regrades one student of that course folder)
    shutil.copytree(SAMPLES / "integrity_library_torch_fallback", tmp_path / "one" / "integrity_library_torch_fallback")
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True, **FAST)
    original = policy_module.load_policy
    policy_module.load_policy = lambda root: Policy(on_use="flag")
    try:
        same = grade_batch(tmp_path / "one", ROOT, flagged_batch.out, settings, limits, jobs=1, progress=False)
    finally:
        policy_module.load_policy = original
    assert (same.graded_now, same.reused, same.results[0].score) == (0, 1, 60.0)
    changed = grade_batch(tmp_path / "one", ROOT, flagged_batch.out, settings, limits, jobs=1, progress=False)
    assert (changed.graded_now, changed.results[0].score) == (1, 50.0)   # zero_cell, from settings.ini
    assert changed.results[0].flags[0]["action"] == "zero_cell"
