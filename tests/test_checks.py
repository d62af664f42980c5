"""Checks that run on their own (tinytorch.checks) and partial credit per check (scoring), no kernels."""
import contextlib
import io

import nbformat
import numpy as np
import pytest

from tinytorch.checks import attempt, check, checks_passed, expect_close, expect_raises, hidden_check, record_result
from tinytorch.record import Record, decode_records, encode_record
from tito.grading.scoring import score_cell, split_points


def run(block) -> tuple:
    "(records printed, the error checks_passed() raised or None) of running `block()` as a graded cell would."
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        block()
        try:
            checks_passed()
        except Exception as error:  # noqa: BLE001 - what the cell would show
            return decode_records(printed.getvalue()), error
    return decode_records(printed.getvalue()), None


def not_written():
    raise NotImplementedError()


def test_a_failing_check_never_stops_the_next():
    def cell():
        with check("c:one", "first idea"):
            expect_close([1.0, 2.0], [1.0, 2.5])
        with check("c:two", "second idea"):
            expect_close(3.0, 3.0)
    records, error = run(cell)
    assert set(records) == {"c:one", "c:two"}
    assert isinstance(error, AssertionError) and "first idea" in str(error)


def test_the_first_error_is_raised_itself_and_the_others_are_named():
    def cell():
        with check("c:one", "the loops"):
            expect_close(not_written(), 1.0)
        with check("c:two", "the shape"):
            expect_close((2, 3), (2, 4))
    records, error = run(cell)
    assert type(error) is NotImplementedError            # the traceback points at the student's function
    assert set(records) == {"c:two"}                     # nothing recorded for the check that raised first
    if hasattr(error, "__notes__"):
        assert "2 checks failed" in error.__notes__[0] and "c:two: the shape" in error.__notes__[0]


def test_records_carry_the_check_name_concept_and_points():
    def cell():
        with check("c:pair", "two values", points=1.5):
            expect_close(1.0, 1.0)
            record_result([4.0, 5.0])
    records, error = run(cell)
    assert error is None
    assert records["c:pair"].concept == "two values" and records["c:pair"].points == 1.5
    assert records["c:pair#2"].value.tolist() == [4.0, 5.0]


def test_hidden_checks_show_no_values_and_keep_going():
    def cell():
        hidden_check("h:one", not_written, lambda: [1.0], "hidden idea one")
        hidden_check("h:two", lambda: [0.0, 1.0], lambda: [0.0, 1.5], "hidden idea two")
        hidden_check("h:three", [7.0], lambda: [7.0], "hidden idea three")
    records, error = run(cell)
    assert set(records) == {"h:two", "h:three"}
    assert type(error) is NotImplementedError
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(AssertionError) as failed:
        hidden_check("h:four", lambda: [0.0, 1.0], lambda: [0.0, 1.5], "hidden idea four")
        checks_passed()
    assert "1.5" not in str(failed.value) and "largest difference 0.5" in str(failed.value)


def test_expect_raises_records_whether_the_error_came():
    def cell():
        with check("r:yes", "refuses"):
            expect_raises(ValueError, lambda: int("x"), "invalid literal")
        with check("r:no", "refuses too"):
            expect_raises(ValueError, lambda: 3, "anything")
    records, error = run(cell)
    assert records["r:yes"].value.tolist() == 1.0 and records["r:no"].value.tolist() == 0.0
    assert isinstance(error, AssertionError) and "expected ValueError" in str(error)


def test_attempt_keeps_a_set_up_error_for_the_end():
    def cell():
        with attempt():
            not_written()
            hidden_check("never", [1.0], lambda: [1.0], "never reached")
        hidden_check("after", [1.0], lambda: [1.0], "after the set-up")
    records, error = run(cell)
    assert set(records) == {"after"} and type(error) is NotImplementedError


def test_an_interrupt_is_never_swallowed():
    with pytest.raises(KeyboardInterrupt):
        with check("k", "interrupted"):
            raise KeyboardInterrupt
    checks_passed()


REFERENCE = {name: rec for name, rec in decode_records("\n".join([
    encode_record("cell:a0", [1.0, 2.0], "idea a"),
    encode_record("cell:a1", [3.0], "idea a"),
    encode_record("cell:b", [4.0], "idea b"),
    encode_record("cell:c", [5.0], "idea c"),
])).items()}


def test_points_are_split_evenly_over_distinct_concepts_unless_named():
    assert [(c, p) for c, _, p in split_points(REFERENCE, 6.0)] == [("idea a", 2.0), ("idea b", 2.0), ("idea c", 2.0)]
    named = dict(REFERENCE, **decode_records(encode_record("cell:d", [0.0], "idea d", points=3.0)))
    assert [p for *_, p in split_points(named, 6.0)] == [1.0, 1.0, 1.0, 3.0]


def executed(printed: str, error: str | None = None):
    cell = nbformat.v4.new_code_cell("", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    if error:
        cell.outputs.append(nbformat.v4.new_output("error", ename=error, evalue="boom", traceback=[]))
    return cell


def test_a_bug_in_one_concept_keeps_the_cells_other_points():
    printed = "\n".join([encode_record("cell:a0", [1.0, 2.0], ""), encode_record("cell:a1", [3.5], ""),
                         encode_record("cell:b", [4.0], ""), encode_record("cell:c", [5.0], "")])
    score = score_cell(executed(printed, "AssertionError"), 6.0, REFERENCE)
    assert score.points == 4.0
    assert [(c.concept, c.earned) for c in score.checks] == [("idea a", 0.0), ("idea b", 2.0), ("idea c", 2.0)]
    assert score.reasons == ("boom", "idea a")


def test_an_error_that_stops_the_cell_costs_the_checks_not_recorded():
    printed = "\n".join([encode_record("cell:a0", [1.0, 2.0], ""), encode_record("cell:a1", [3.0], "")])
    score = score_cell(executed(printed, "NotImplementedError"), 6.0, REFERENCE)
    assert score.points == 2.0 and [c.missing for c in score.checks] == [False, True, True]
    assert score.reasons == ("NotImplementedError: boom",)


def test_thirds_are_rounded_to_hundredths_and_a_full_cell_is_exact():
    printed = "\n".join([encode_record("cell:a0", [1.0, 2.0], ""), encode_record("cell:a1", [3.0], "")])
    assert score_cell(executed(printed), 10.0, REFERENCE).points == 3.33
    full = "\n".join(encode_record(name, rec.value, "") for name, rec in REFERENCE.items())
    assert score_cell(executed(full), 10.0, REFERENCE).points == 10.0


def test_a_record_printed_twice_never_scores():
    forged = encode_record("cell:b", [4.0], "") + "\n" + encode_record("cell:b", [4.0], "")
    score = score_cell(executed(forged), 6.0, REFERENCE)
    assert [c.earned for c in score.checks] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("got, expected, how", [
    (np.ones((1, 2)), np.ones((2, 1)), "the result has shape (1, 2), expected (2, 1)"),
    (-np.arange(1.0, 5.0), np.arange(1.0, 5.0), "every value has the wrong sign"),
    (np.zeros(3), np.array([1.0, -2.0, 3.0]), "every value is 0"),
    (np.array([2.0, 4.0, 0.0]), np.array([1.0, 2.0, 0.0]), "every value is 2 times the expected one"),
    (np.array([1.5, 2.5, 3.5]), np.array([1.0, 2.0, 3.0]), "every value is off by the same amount (+0.5)"),
    (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "1 of 2 values are NaN or infinite"),
])
def test_a_wrong_record_is_described_without_its_values(got, expected, how):
    from tito.grading.scoring import how_it_differs
    assert how_it_differs(Record(got, "c"), Record(expected, "c")) == how


def test_one_wrong_channel_or_a_few_values_are_located():
    from tito.grading.scoring import how_it_differs
    expected = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2) + 1.0
    one_channel = expected.copy()
    one_channel[:, 1] *= -3.0
    assert how_it_differs(Record(one_channel, "c"), Record(expected, "c")) == "only channel 1 of 3 is wrong"
    scattered = expected.copy()
    scattered[0, 0, 1, 1] += 5.0
    scattered[1, 2, 0, 0] += 1.0
    assert how_it_differs(Record(scattered, "c"), Record(expected, "c")) == \
        "2 of 24 values differ, the largest at index (0, 0, 1, 1)"


def test_the_feedback_line_says_how_a_check_differs():
    from tito.grading.feedback import _check_lines
    from tito.grading.scoring import CheckResult
    line, = _check_lines([CheckResult("the window sum", 2.0, 0.0, ("cell:sum",), False, "every value is 0")], [])
    assert line.startswith("- ✗ `cell:sum` 0\u00a0/\u00a02: the window sum (every value is 0)")


def test_an_index_error_in_the_students_loops_says_which_index_left_which_axis():
    from tito.grading.scoring import error_summary
    error = {"ename": "IndexError", "evalue": "index 5 is out of bounds for axis 2 with size 5",
             "traceback": ["Traceback (most recent call last):\n",
                           "  Cell \x1b[92mIn[7]\x1b[39m, line 4\n    expect_close(conv2d_loops(x, ones), ...)\n",
                           "  Cell In[6], line 24 in \x1b[35mconv2d_loops\x1b[39m\n    total += x_padded[b, c, h, w]\n",
                           "IndexError: index 5 is out of bounds for axis 2 with size 5\n"]}
    summary = error_summary(error)
    assert summary.startswith("IndexError in conv2d_loops: index 5 left axis 2 (rows (H) of an (N, C, H, W) array, size 5)")
    assert "window starting at out * stride + k stays inside the padded input" in summary
    broadcast = {"ename": "ValueError", "evalue": "operands could not be broadcast together with shapes (2,3) (4,)",
                 "traceback": ["  File /x.py:3 in batch_norm2d_loops\n"]}
    assert error_summary(broadcast).startswith("ValueError in batch_norm2d_loops: operands could not be broadcast")
    assert error_summary({"ename": "KeyError", "evalue": "'w'", "traceback": []}) == "KeyError: 'w'"
