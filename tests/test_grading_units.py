"""The grader's notebook surgery, scoring and feedback sanitising, on small notebooks (no kernels)."""
import copy
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from tito.grading.feedback import feedback_notebook, find_leaks, to_html
from tito.grading.course import load_assignment
from tito.grading.find import discover
from tito.grading.model import GradingError, Submission
from tito.grading.pipeline import grade_one
from tito.grading.notebooks import (InvalidNotebook, content_hash, demo_cells, grade_id, read_submission,
                                         restore_cells, secret_lines)
from tito.grading.sandbox import KernelLimits
from tito.settings import load_settings
from tinytorch.record import Record, encode_record
from tito.grading.scoring import error_summary, score_cells


def meta(**fields):
    base = {"schema_version": 3, "grade": False, "locked": False, "solution": False, "task": False}
    base.update(fields)
    return {"nbgrader": base}


def source_notebook():
    cells = [
        nbformat.v4.new_code_cell("import numpy as np", metadata=meta(grade_id="imports", locked=True)),
        nbformat.v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return np.asarray(x) * 2.0  # doubling secret\n"
                                  "    ### END SOLUTION", metadata=meta(grade_id="double_impl", solution=True)),
        nbformat.v4.new_code_cell("assert double(1) == 2\n### BEGIN HIDDEN TESTS\n"
                                  "record('double_test:vec', double(np.arange(3.0)), 'double every element')\n"
                                  "### END HIDDEN TESTS",
                                  metadata=meta(grade_id="double_test", grade=True, locked=True, points=2)),
        nbformat.v4.new_markdown_cell("Notes\n=== BEGIN MARK SCHEME ===\ngive marks for the idea of doubling\n"
                                      "=== END MARK SCHEME ===", metadata=meta(grade_id="essay", solution=True)),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def student_version(source):
    nb = copy.deepcopy(source)
    nb.cells[1].source = "def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    nb.cells[2].source = "assert double(1) == 2"
    nb.cells[3].source = "Notes"
    return nb


def as_bytes(nb) -> bytes:
    return nbformat.writes(nb).encode("utf-8")


@pytest.mark.parametrize("data, reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "not a notebook"),
    (json.dumps({"cells": [], "nbformat": 3}).encode(), "format 4"),
    (json.dumps({"cells": [{"cell_type": "weird", "source": ""}], "nbformat": 4, "metadata": {}}).encode(),
     "unknown cell type"),
])
def test_unreadable_submissions_say_why(data, reason):
    with pytest.raises(InvalidNotebook, match=reason):
        read_submission(data)


def test_restore_puts_back_edited_and_deleted_tests_and_keeps_answers():
    source = source_notebook()
    release = student_version(source)
    submission = copy.deepcopy(release)
    submission.cells[1].source = "def double(x):\n    return x + x"
    submission.cells[0].source = "import numpy as np\nnp.allclose = lambda *a, **k: True"   # a locked cell, edited
    del submission.cells[2]                                                                  # the test, deleted
    restored, flags = restore_cells(read_submission(as_bytes(submission)), source, release)
    assert [grade_id(c) for c in restored.cells] == ["imports", "double_impl", "double_test", "essay"]
    assert restored.cells[0].source == "import numpy as np"
    assert restored.cells[1].source == "def double(x):\n    return x + x"
    assert "BEGIN HIDDEN TESTS" in restored.cells[2].source
    assert flags == ["edited test cells restored: imports", "deleted test cells restored: double_test"]


def test_duplicated_and_foreign_grade_ids_lose_their_role_and_are_flagged():
    source = source_notebook()
    submission = student_version(source)
    twin = copy.deepcopy(submission.cells[2])
    twin.source = "print('my copy')"
    foreign = nbformat.v4.new_code_cell("print(1)", metadata=meta(grade_id="bonus", grade=True, points=50))
    submission.cells[3:3] = [twin, foreign]
    restored, flags = restore_cells(read_submission(as_bytes(submission)), source, student_version(source))
    assert [grade_id(c) for c in restored.cells] == ["imports", "double_impl", "double_test", None, None, "essay"]
    assert flags == ["duplicated grade ids ignored: double_test", "unknown grade ids ignored: bonus"]
    assert len({c.id for c in restored.cells}) == len(restored.cells)


def test_secret_lines_are_the_solution_hidden_and_mark_scheme_lines_only():
    secrets = secret_lines(source_notebook())
    assert secrets == {"solution": {"return np.asarray(x) * 2.0  # doubling secret"},
                       "hidden": {"record('double_test:vec', double(np.arange(3.0)), 'double every element')"},
                       "mark scheme": {"give marks for the idea of doubling"}}


def executed_test_cell(printed: str, error=None):
    cell = nbformat.v4.new_code_cell("", metadata=meta(grade_id="double_test", grade=True, locked=True, points=2))
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    if error:
        cell.outputs.append(nbformat.v4.new_output("error", ename=error, evalue="boom", traceback=[]))
    return nbformat.v4.new_notebook(cells=[cell])


REFERENCE = {"double_test": {"double_test:vec": Record(np.array([0.0, 2.0, 4.0]), "double every element")}}


@pytest.mark.parametrize("printed, error, points, reasons", [
    (encode_record("double_test:vec", [0.0, 2.0, 4.0], "student's words") + "\n", None, 2.0, None),
    (encode_record("double_test:vec", [0.0, 2.0 + 1e-9, 4.0], "") + "\n", None, 2.0, None),
    (encode_record("double_test:vec", [0.0, 2.0, 4.1], "") + "\n", None, 0.0, ["double every element"]),
    (encode_record("double_test:vec", [0.0, 2.0], "") + "\n", None, 0.0, ["double every element"]),
    ("all good!\n", None, 0.0, ["double every element (no result was recorded)"]),
    # partial credit: a check scores on its records; the error is still reported
    (encode_record("double_test:vec", [0.0, 2.0, 4.0], "") + "\n", "AssertionError", 2.0, ["boom"]),
    ("", "NameError", 0.0, ["NameError: boom"]),
])
def test_a_check_scores_only_when_every_reference_record_matches(printed, error, points, reasons):
    got, messages = score_cells(executed_test_cell(printed, error), [("double_test", 2.0)], REFERENCE)
    assert got == {"double_test": points}
    assert messages.get("double_test") == reasons


@pytest.mark.parametrize("evalue, shown", [
    ("unexpected indent (3440546843.py, line 4)", "IndentationError: unexpected indent (line 4)"),
    ("invalid syntax (/tmp/ipykernel_7/24276757.py, line 10)", "IndentationError: invalid syntax (line 10)"),
    ("bad value (see my_helper.py, line 3)", "IndentationError: bad value (see my_helper.py, line 3)"),
])
def test_a_syntax_error_names_the_line_not_ipythons_cell_file(evalue, shown):
    assert error_summary({"ename": "IndentationError", "evalue": evalue}) == shown


def test_stderr_is_not_an_error():
    nb = executed_test_cell(encode_record("double_test:vec", [0.0, 2.0, 4.0], "") + "\n")
    nb.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="DeprecationWarning: honest\n"))
    assert score_cells(nb, [("double_test", 2.0)], REFERENCE)[0] == {"double_test": 2.0}


def test_feedback_drops_hidden_code_records_tracebacks_and_smuggled_lines_but_keeps_the_students_own_text():
    source = source_notebook()
    executed, _ = restore_cells(read_submission(as_bytes(student_version(source))), source)
    hidden_line = "record('double_test:vec', double(np.arange(3.0)), 'double every element')"
    own = "def double(x):\n    # my notes: BEGIN SOLUTION goes here\n    return np.asarray(x) * 2.0  # doubling secret"
    executed.cells[1].source = own
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"stolen: {hidden_line}\nhello\n")]
    executed.cells[2].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=encode_record("double_test:vec", [1.0], "x") + "\n"),
        nbformat.v4.new_output("error", ename="AssertionError", evalue="double every element",
                               traceback=[f"----> 3 {hidden_line}"])]
    page = to_html(feedback_notebook(executed, own, secret_lines(source), {"double_test": 0.0},
                                     {"double_test": ["double every element"]}, [("double_test", 2.0)], "# Feedback"),
                   "Feedback: 09_spatial, <b>ann</b>")
    assert find_leaks(page, secret_lines(source), own) == []
    assert "<title>Feedback: 09_spatial, &lt;b&gt;ann&lt;/b&gt;</title>" in page
    # the score table above the notebook: one row per graded cell, with what to look at first
    assert ('<td style="text-align:left;">double_test</td>\n  <td style="text-align:right;">0\u00a0/\u00a02</td>\n'
            '  <td style="text-align:left;">double every element</td>') in page
    assert "hello" in page and "double every element" in page and "0 / 2 points" in page
    assert "doubling secret" in page          # the student's own line is theirs to see
    assert "BEGIN SOLUTION" not in page       # their marker words are defused, not a leak
    assert "give marks for the idea" not in page and "tinytorch-record" not in page


def test_find_leaks_sees_a_hidden_line_that_is_not_the_students():
    secrets = secret_lines(source_notebook())
    line = "record('double_test:vec', double(np.arange(3.0)), 'double every element')"
    page = f"<pre><span>{line[:20]}</span>{line[20:]}</pre>"
    assert find_leaks(page, secrets, "") == [f"hidden line '{line[:60]}'"]
    assert find_leaks("<p>BEGIN HIDDEN TESTS</p>", secrets, "")[0] == "marker 'BEGIN HIDDEN TESTS'"


def test_discover_reads_both_layouts_and_names_odd_files(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "ann.ipynb").write_text("{}")
    (flat / "notes.txt").write_text("not a submission")
    assert [(s.student, s.path.name) for s in discover(flat, "09_spatial", "09_spatial.ipynb")] == [("ann", "ann.ipynb")]
    course = tmp_path / "course"
    for student, name in (("bob", "09_spatial.ipynb"), ("cy", "Final.ipynb")):
        (course / "submitted" / student / "09_spatial").mkdir(parents=True)
        (course / "submitted" / student / "09_spatial" / name).write_text("{}")
    (course / "submitted" / "dee" / "09_spatial").mkdir(parents=True)
    (course / "submitted" / "eve").mkdir(parents=True)
    found = {s.student: (s.path.name if s.path else None, s.problem) for s in discover(course, "09_spatial", "09_spatial.ipynb")}
    assert found == {"bob": ("09_spatial.ipynb", ""),
                     "cy": ("Final.ipynb", "graded Final.ipynb: expected the file name 09_spatial.ipynb"),
                     "dee": (None, "no 09_spatial.ipynb in dee/09_spatial/"),
                     "eve": (None, "no 09_spatial/ folder in eve/")}


def with_demo(nb):
    "`nb` with an instructor's demo cell (a plot, say) at the end."
    nb = copy.deepcopy(nb)
    nb.cells.append(nbformat.v4.new_code_cell("print('a plot')", metadata={"tags": ["demo"]}))
    return nb


def test_only_the_instructors_unchanged_demo_cells_are_skipped():
    source = with_demo(source_notebook())
    submission = student_version(source)
    edited = copy.deepcopy(submission.cells[4])
    edited.source = "print('a plot')\nhelper = 1"                  # the student's code now: it runs
    own = nbformat.v4.new_code_cell("helper = 2", metadata={"tags": ["demo"]})   # a student's tag counts for nothing
    untagged = nbformat.v4.new_code_cell("print('a plot')")         # the instructor's text, tag removed: still skipped
    submission.cells += [edited, own, untagged]
    restored, _ = restore_cells(read_submission(as_bytes(submission)), source, student_version(source))
    texts = [c.source for c in restored.cells]
    assert demo_cells(restored, source) == [4, len(texts) - 1]
    assert texts[4] == texts[-1] == "print('a plot')"


def test_a_demo_cell_that_grades_or_exports_is_refused(tmp_path):
    bad = with_demo(source_notebook())
    bad.cells[4].source = "#| export\ndef plot(): pass"
    folder = tmp_path / "source" / "09_spatial"
    folder.mkdir(parents=True)
    nbformat.write(bad, folder / "09_spatial.ipynb")
    with pytest.raises(GradingError, match="cell 5 is tagged demo"):
        load_assignment(tmp_path, "09_spatial", "09_spatial.ipynb")
    bad.cells[4].source = "print('a plot')"
    nbformat.write(bad, folder / "09_spatial.ipynb")
    assert load_assignment(tmp_path, "09_spatial", "09_spatial.ipynb").graded == [("double_test", 2.0)]


def test_a_notebook_above_the_size_cap_is_invalid_without_being_read(tmp_path):
    root = Path(__file__).resolve().parents[1]
    assignment = load_assignment(root, "09_spatial", "09_spatial.ipynb")
    big = tmp_path / "big.ipynb"
    big.write_bytes(b'{"cells": [], "padding": "' + b"x" * (3 * 2**20) + b'"}')
    result = grade_one(Submission("big", big), assignment, {}, KernelLimits(max_notebook_mb=2), tmp_path / "out")
    assert (result.status, result.score) == ("invalid", 0.0)
    assert result.detail.startswith("the notebook is 3 MiB, above the 2 MiB a submission may be: clear its outputs")
    assert result.submission_hash == content_hash(big.read_bytes())
    page = (tmp_path / "out" / "feedback" / "big" / "09_spatial.html").read_text(encoding="utf-8")
    assert "above the 2 MiB" in page


def test_a_fault_writing_an_ungraded_page_costs_that_row_only_and_a_full_disk_says_so(tmp_path, monkeypatch):
    "The page of a notebook that cannot be read is written by the grader too: its faults are handled like any other."
    import errno
    from tito.grading import intake, report
    root = Path(__file__).resolve().parents[1]
    assignment = load_assignment(root, "09_spatial", "09_spatial.ipynb")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("not a notebook")

    def buggy(*args, **kwargs):
        raise KeyError("a bug of the grader's own")
    monkeypatch.setattr(report, "write_ungraded", buggy)
    result = grade_one(Submission("broken", broken), assignment, {}, KernelLimits(), tmp_path / "out", "sandbox off")
    assert (result.status, result.score) == ("crashed", 0.0)
    assert result.notes == [["internal", "internal grading error, tell the instructor: KeyError: \"a bug of the grader's own\""]]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(report, "write_ungraded", full)
    with pytest.raises(intake.DiskFull, match="the disk is full"):
        grade_one(Submission("broken", broken), assignment, {}, KernelLimits(), tmp_path / "out")


def test_settings_name_a_missing_grading_key(tmp_path):
    root = Path(__file__).resolve().parents[1]
    text = (root / "settings.ini").read_text(encoding="utf-8")
    assert load_settings(root).max_notebook_mb == 64
    (tmp_path / "settings.ini").write_text(text.replace("max_notebook_mb = 64\n", ""), encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[grading\] max_notebook_mb"):
        load_settings(tmp_path)


@pytest.mark.parametrize("option, value", [("--memory-mb", "0"), ("--cell-timeout", "-5"), ("--max-notebook-mb", "big")])
def test_tito_grade_refuses_a_limit_that_is_not_a_positive_number(option, value, tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "tito.cli", "grade", str(tmp_path), option, value],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"argument {option}: expected a positive whole number, got '{value}'" in result.stderr


# ---------------------------------------------------------------- issue 12: deleted cells, shapes, encodings

def test_a_deleted_answer_cell_comes_back_as_the_stub_never_the_solution():
    source, release = source_notebook(), student_version(source_notebook())
    submission = copy.deepcopy(release)
    del submission.cells[1]
    restored, flags = restore_cells(read_submission(as_bytes(submission)), source, release)
    assert [grade_id(c) for c in restored.cells] == ["imports", "double_impl", "double_test", "essay"]
    assert restored.cells[1].source == release.cells[1].source
    assert "doubling secret" not in "".join(c.source for c in restored.cells)
    assert flags == ["deleted answer cells put back as stubs: double_impl"]
    empty, flags = restore_cells(read_submission(as_bytes(nbformat.v4.new_notebook())), source, release)
    assert [c.source for c in empty.cells[:2]] == ["import numpy as np", release.cells[1].source]
    assert "doubling secret" not in "".join(c.source for c in empty.cells)


def test_a_restored_test_sees_every_cell_the_intact_test_would_have_seen():
    source, release = source_notebook(), student_version(source_notebook())
    submission = copy.deepcopy(release)
    submission.cells[1].source = "def double(x):\n    return x * 2"
    wrong = nbformat.v4.new_code_cell("def double(x):\n    return x * 3   # my later, wrong version")
    mine = nbformat.v4.new_code_cell("print('notes')")
    submission.cells[2:3] = [wrong, mine]    # the test deleted, two cells of the student's where it stood
    restored, _ = restore_cells(read_submission(as_bytes(submission)), source, release)
    order = [grade_id(c) or c.source.splitlines()[0] for c in restored.cells]
    assert order == ["imports", "double_impl", "def double(x):", "print('notes')", "double_test", "essay"]
    # a stub is put back early instead: the student's own later cells keep the last word
    submission = copy.deepcopy(release)
    submission.cells[1:2] = [nbformat.v4.new_code_cell("def double(x):\n    return x * 2")]
    restored, _ = restore_cells(read_submission(as_bytes(submission)), source, release)
    assert [grade_id(c) for c in restored.cells] == ["imports", "double_impl", None, "double_test", "essay"]


@pytest.mark.parametrize("data, reason", [
    (b"[" * 200_000 + b"]" * 200_000, "nests lists or objects far deeper than the 64 levels"),
    (b'{"cells": [], "nbformat": 4, "metadata": {"x": ' + b"[" * 68 + b"]" * 68 + b"}}",
     "nests lists or objects 70 levels deep, more than the 64"),
    (json.dumps({"cells": [{"cell_type": "raw", "source": "", "metadata": {}}] * 2001, "nbformat": 4,
                 "metadata": {}}).encode(), "it has 2,001 cells, more than the 2,000"),
])
def test_shapes_a_grader_cannot_handle_are_invalid_with_a_reason(data, reason):
    with pytest.raises(InvalidNotebook, match=reason):
        read_submission(data)


def test_a_byte_order_mark_is_read():
    nb = read_submission(b"\xef\xbb\xbf" + as_bytes(source_notebook()))
    assert grade_id(nb.cells[0]) == "imports"


def test_feedback_is_inert_whatever_the_student_wrote():
    from html.parser import HTMLParser
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Notes\n<iframe srcdoc='<script>alert(1)</script>'></iframe>"
                                      "<img src=x onerror=alert(1)><details open ontoggle=alert(1)>x</details>"
                                      "<svg onload=alert(1)><script>alert(1)</script></svg>"
                                      "[a](javascript:alert(1)) <a href='javascript:alert(1)'>b</a>"),
        nbformat.v4.new_code_cell("x = '<script>alert(1)</script>'")])
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"c{index}"
    tags = []

    class Page(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))
    page = to_html(nb, "Feedback")
    Page().feed(page)
    names = [tag for tag, _ in tags]
    assert not {"script", "iframe", "svg", "object", "embed", "details"} & set(names), names
    assert not [(tag, attrs) for tag, attrs in tags if any(name.startswith("on") for name in attrs)]
    assert not [attrs for _, attrs in tags if any("javascript:" in (v or "").lower() for v in attrs.values())]
    csp = [attrs["content"] for tag, attrs in tags if tag == "meta" and attrs.get("http-equiv") ==
           "Content-Security-Policy"]
    assert names.index("meta") == names.index("head") + 1 and csp and "script-src 'none'" in csp[0]
    assert "&lt;iframe srcdoc" in page   # shown as the text it is


@pytest.mark.parametrize("name, kind, problem", [
    ("alice/09_spatial.ipynb", "file", None), ("alice", "dir", None),
    ("../etc/passwd", "file", "outside"), ("/etc/passwd", "file", "outside"), ("a/../../b", "file", "outside"),
    ("..\\evil.ipynb", "file", "outside"), ("C:evil.ipynb", "file", "outside"), ("a\x00b", "file", "outside"),
    ("", "file", "outside"), ("alice/link", "link", "link"), ("alice/fifo", "other", "special"),
])
def test_one_rule_decides_which_archive_members_are_unpacked(name, kind, problem):
    from tito.grading.intake import member_problem
    assert member_problem(name, kind) == problem


def test_whether_a_grade_was_sandboxed_is_a_field_not_a_reading_of_detail():
    from tito.grading.model import Result
    plain = dict(student="s", status="graded", score=1.0, max_score=2.0)
    assert Result(**plain, detail="sandbox off; anything", sandboxed=True).graded_in_sandbox()
    assert not Result(**plain, detail="", sandboxed=False).graded_in_sandbox()
    # journals written before the field: the structured note decides, then (oldest) the text
    assert not Result(**plain, detail="x", notes=[["sandbox", "sandbox off"]]).graded_in_sandbox()
    assert not Result(**plain, detail="sandbox off; cell 3").graded_in_sandbox()
    assert Result(**plain, detail="cell 3 failed").graded_in_sandbox()
