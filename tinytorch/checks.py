"""Checks that run on their own: the visible and hidden checks of a graded cell.

Every check in a graded cell is a block

    with check("conv2d_loops:window_sum", "each output is the sum of its 2x2 window"):
        expect_close(conv2d_loops(x, ones)[0, 0], [[10, 14, 18], [26, 30, 34], [42, 46, 50]])

`expect_close` prints the value it was given as a record (`tinytorch.record`) under the
check's name, then compares it with what was expected. The block catches what fails inside it,
so one failing check (a wrong value, a NotImplementedError, an IndexError) never stops the next;
`checks_passed()` at the end of the cell raises the first failure itself (its traceback points
at the student's function) and lists the others. The grader never trusts any of this: it
compares the printed records with the reference solution's, check by check, in its own process,
and a check earns its points only when all its records match.
"""
import numpy as np

from tinytorch.record import as_plain_float64, record

_failures = []        # (name, concept, error) of the checks that failed since the last checks_passed()
_current = []         # the check being run (a stack: a check inside a check records under the inner one)


class _Check:
    def __init__(self, name: str, concept: str, points: float | None):
        self.name, self.concept, self.points = str(name), str(concept), points
        self.records = 0

    def record_name(self) -> str:
        "The first record of a check carries its name; more records of the same check get #2, #3, …"
        self.records += 1
        return self.name if self.records == 1 else f"{self.name}#{self.records}"

    def __enter__(self):
        _current.append(self)
        return self

    def __exit__(self, kind, error, traceback):
        _current.remove(self)
        if error is None or not isinstance(error, Exception):
            return False                       # KeyboardInterrupt, SystemExit: the kernel's, not the check's
        _failures.append((self.name, self.concept, error))
        return True


def check(name: str, concept: str, points: float | None = None) -> _Check:
    """A check of one idea (`concept`, in a student's words), named for the grader. By default a
    graded cell's points are split evenly over its distinct concepts; `points` names a check's share."""
    return _Check(name, concept, points)


def _record(value) -> np.ndarray:
    got = as_plain_float64(value)
    if _current:
        here = _current[-1]
        record(here.record_name(), got, here.concept, here.points)
    return got


def _concept() -> str:
    return _current[-1].concept if _current else "check failed"


def current_concept() -> str:
    "The concept of the check being run, '' outside a check (helpers such as gradcheck open their messages with it)."
    return _current[-1].concept if _current else ""


def record_result(value) -> None:
    "Record `value` under the current check for the grader to compare with the reference, asserting nothing here."
    _record(value)


def expect_close(got, expected, rtol: float = 1e-7, atol: float = 1e-9, show_values: bool = True) -> None:
    """Record `got` for the grader, then assert it has the shape and (within tolerance) the values of
    `expected`. A small mismatch shows both arrays, unless `show_values` is False (hidden checks)."""
    got = _record(got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{_concept()}\n  expected shape {expected.shape}, got {got.shape}"
    assert np.allclose(got, expected, rtol=rtol, atol=atol), (
        f"{_concept()}\n  expected\n{expected}\n  got\n{got}" if show_values and got.size <= 16 else
        f"{_concept()}\n  largest difference {np.abs(got - expected).max():.3g}")


def expect_raises(error: type, call, contains: str) -> None:
    "Record whether `call()` raised `error` with a message containing `contains`, then assert it did."
    try:
        call()
    except error as caught:
        _record(float(contains in str(caught)))
        assert contains in str(caught), f"{_concept()}\n  the message {str(caught)!r} should mention {contains!r}"
        return
    _record(0.0)
    raise AssertionError(f"{_concept()}\n  expected {error.__name__} mentioning {contains!r}")


def hidden_check(name: str, got, reference, concept: str, rtol: float = 1e-7, atol: float = 1e-9,
                 points: float | None = None) -> None:
    """One hidden check: `got` (a value, or a function computing it from the student's code) recorded
    under `name` and compared with `reference()`; a failure (wrong value or an error) is kept for
    checks_passed() and never stops the next check."""
    with check(name, concept, points):
        value = got() if callable(got) else got
        expect_close(value, reference(), rtol=rtol, atol=atol, show_values=False)


class attempt:
    "A block whose error is kept for checks_passed() instead of stopping the cell (set-up shared by checks)."
    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, Exception):
            return False
        _failures.append(("set-up", "the checks after this step could not run", error))
        return True


def checks_passed() -> None:
    "End of a graded cell: raise the first failed check's own error (naming the others), or return."
    failed = list(_failures)
    _failures.clear()
    _current.clear()
    if not failed:
        return
    name, concept, first = failed[0]
    if len(failed) > 1 and hasattr(first, "add_note"):
        others = "; ".join(f"{n}: {c}" for n, c, _ in failed[1:])
        first.add_note(f"{len(failed)} checks failed in this cell; also: {others}")
    raise first
