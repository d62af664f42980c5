"""The mutation harness itself, on a toy assignment: it must find mutants, kill the ones a check
catches (by an error or by a record that differs) and report the ones no check catches."""
import json

from tito.grading.mutation import generate_mutants, run_mutants

SOLUTION = '''import numpy as np
def running_max(values):
    "Largest element, by a loop."
    best = -np.inf
    ### BEGIN SOLUTION
    for index in range(len(values)):
        if values[index] > best:
            best = values[index]
    ### END SOLUTION
    return best

def window_sum(values, width):
    "Sums of each window of `width` elements."
    out = np.zeros(len(values) - width + 1)
    ### BEGIN SOLUTION
    for start in range(len(out)):
        out[start] = values[start:start + width].sum()
    ### END SOLUTION
    return out
'''

STRONG_CHECK = '''from tinytorch.record import record
assert running_max([1.0, 3.0, 2.0]) == 3.0
record("max:negatives", running_max([-5.0, -2.0, -7.0]), "an all-negative list: start from -inf")
record("sums", window_sum(np.array([1.0, 2.0, 4.0, 8.0]), 2), "window sums")
'''


def toy_notebook(check_source):
    def cell(source, **nbgrader):
        return {"cell_type": "code", "metadata": {"nbgrader": nbgrader} if nbgrader else {},
                "source": source, "outputs": [], "execution_count": None}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [cell(SOLUTION, solution=True, grade=False, grade_id="code"),
                      cell(check_source, grade=True, grade_id="checks", points=2)]}


def test_mutants_are_generated_only_inside_solution_regions():
    mutants = generate_mutants(toy_notebook(STRONG_CHECK))
    operators = {m.operator for m in mutants}
    assert {"swap Gt->GtE", "statement deleted", "range argument 0 - 1"} <= operators
    assert all(m.function in ("running_max", "window_sum") for m in mutants)
    # `best = -np.inf` and `out = np.zeros(...)` lie outside the regions: never mutated
    assert not any("-inf" in m.operator for m in mutants)
    assert not any(m.original_line.strip().startswith("out = np.zeros") for m in mutants)


def test_strong_checks_kill_and_weak_checks_let_survive(tmp_path):
    strong, weak = tmp_path / "strong.ipynb", tmp_path / "weak.ipynb"
    strong.write_text(json.dumps(toy_notebook(STRONG_CHECK)))
    weak.write_text(json.dumps(toy_notebook("assert running_max([1.0, 3.0, 2.0]) == 3.0\n")))
    strong_report = run_mutants(strong, jobs=1, progress=False)
    weak_report = run_mutants(weak, jobs=1, progress=False)
    assert len(strong_report.outcomes) == len(weak_report.outcomes) > 10
    assert weak_report.score < strong_report.score
    # the weak check never looks at window_sum: every window_sum mutant that runs survives it
    assert any(m.function == "window_sum" for m in weak_report.survivors())
    # `>` -> `>=` is equivalent for a maximum: it survives even the strong check
    assert any(m.operator == "swap Gt->GtE" for m in strong_report.survivors())
    killed_reasons = [o.reason for o in strong_report.outcomes if o.killed]
    assert any("record sums differs: window sums" in r for r in killed_reasons)


def test_records_verdict_ignores_asserts(tmp_path):
    "With asserts stripped only records count: a check made only of asserts kills nothing that runs."
    asserts_only = tmp_path / "asserts_only.ipynb"
    asserts_only.write_text(json.dumps(toy_notebook("assert running_max([1.0, 3.0, 2.0]) == 3.0\n")))
    by_records = run_mutants(asserts_only, jobs=1, progress=False, verdict="records")
    by_grader = run_mutants(asserts_only, jobs=1, progress=False, verdict="grader")
    assert by_grader.killed > 0
    assert all("mutated cell itself fails" in o.reason for o in by_records.outcomes if o.killed)
    strong = tmp_path / "strong.ipynb"
    strong.write_text(json.dumps(toy_notebook(STRONG_CHECK)))
    reasons = [o.reason for o in run_mutants(strong, jobs=1, progress=False, verdict="records").outcomes]
    assert any("record max:negatives differs: an all-negative list" in r for r in reasons)
