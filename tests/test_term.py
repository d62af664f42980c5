"""A term on one grader, end to end on real sandboxed grading of sample notebooks: partial credit
within a cell, the deadline (late, too late, extended, unknown time), a regrade of one student,
and a changed hidden check reported in regrades.csv. (The deadline arithmetic itself is
tests/test_deadline.py; the formgrader round trip is tests/test_formgrader.py.)"""
import csv
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from student_notebooks import ROOT
from tito.grading.deadline import DeadlinePolicy
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for
from tito.grading.term import COLUMNS
from tito.settings import load_settings

SAMPLES = ROOT / "tests" / "submissions" / "submitted"
FAST = dict(cell_timeout=30, submission_timeout=120, memory_mb=2048)
DUE = datetime(2026, 12, 10, 23, 59, tzinfo=timezone.utc)
POLICY = DeadlinePolicy(due=DUE, grace_minutes=15, late_penalty_per_day=10, max_late_days=3,
                        extensions={"correct_vectorised": DUE + timedelta(days=3)})
HANDED_IN = {   # nbgrader's timestamp.txt beside each notebook; untouched_release has none
    "reference": DUE + timedelta(hours=26.5),                 # honest, late: 2 started days
    "bug_max_init_zero": DUE + timedelta(days=5),             # past max_late_days
    "correct_vectorised": DUE + timedelta(days=1),            # late, but within its extension
}


def rows(course: Path) -> dict:
    with open(course / "grades.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:len(COLUMNS)] == COLUMNS
        return {row["student_id"]: row for row in reader}


def raw_lines(course: Path) -> dict:
    lines = (course / "grades.csv").read_text(encoding="utf-8").splitlines()[1:]
    return {line.split(",", 1)[0]: line for line in lines}


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    base = tmp_path_factory.mktemp("term")
    submitted = base / "submitted"
    for student in ("reference", "bug_max_init_zero", "correct_vectorised", "untouched_release"):
        shutil.copytree(SAMPLES / student, submitted / student)
        if student in HANDED_IN:
            stamp = HANDED_IN[student].strftime("%Y-%m-%d %H:%M:%S.%f UTC")
            (submitted / student / "09_spatial" / "timestamp.txt").write_text(stamp + "\n", encoding="utf-8")
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True, **FAST)
    course = base / "course"
    report = grade_batch(submitted, ROOT, course, settings, limits, jobs=2, progress=False, deadline=POLICY)
    return dict(base=base, submitted=submitted, course=course, settings=settings, limits=limits, report=report,
                rows=rows(course))


def test_an_honest_late_submission_pays_per_started_day(term):
    row = term["rows"]["reference"]
    assert (row["raw_score"], row["late"], row["late_by_hours"], row["penalty"]) == ("60", "late", "26.5", "13.2")
    assert row["score"] == "46.8"
    assert "submitted 26.5 h late: 2 started days × 10 % of 66 = 13.2 points" in row["detail"]


def test_past_max_late_days_is_graded_for_feedback_but_scores_zero(term):
    row = term["rows"]["bug_max_init_zero"]
    assert row["late"] == "too_late" and row["score"] == "0" and float(row["raw_score"]) > 50
    assert "past the 3 late days allowed" in row["detail"]
    assert (term["course"] / "feedback" / "bug_max_init_zero" / "09_spatial.html").exists()


def test_an_extension_makes_it_on_time_and_an_unknown_time_costs_nothing(term):
    extended, unknown = term["rows"]["correct_vectorised"], term["rows"]["untouched_release"]
    assert (extended["late"], extended["penalty"], extended["score"]) == ("on_time", "0", "60")
    assert (unknown["late"], unknown["late_by_hours"], unknown["penalty"]) == ("unknown", "", "0")
    assert "submission time unknown: no late penalty applied" in unknown["detail"]


def test_a_bug_in_one_concept_keeps_the_cells_other_points(term):
    row = term["rows"]["bug_max_init_zero"]
    assert 0 < float(row["max_pool2d_loops"]) < 8                  # the -inf checks lost, the others kept
    assert row["conv2d_loops"] == "10" and row["batchnorm_train"] == "8"
    page = (term["course"] / "feedback" / "bug_max_init_zero" / "09_spatial.html").read_text(encoding="utf-8")
    assert "✗" in page and "✓" in page and "start the running max at -np.inf" in page


def test_provenance_reproduces_each_grade(term):
    import hashlib
    for student, row in term["rows"].items():
        notebook = term["submitted"] / student / "09_spatial" / "09_spatial.ipynb"
        assert row["submission_sha256"] == hashlib.sha256(notebook.read_bytes()).hexdigest()
        source = term["course"] / "source" / "09_spatial" / "09_spatial.ipynb"
        assert row["tests_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        page = (term["course"] / "feedback" / student / "09_spatial.html").read_text(encoding="utf-8")
        assert row["submission_sha256"] in page and row["tests_sha256"] in page


def test_a_regrade_of_one_student_leaves_the_others_rows_byte_equal(term):
    before = raw_lines(term["course"])
    report = grade_batch(term["submitted"], ROOT, term["course"], term["settings"], term["limits"], jobs=2,
                         progress=False, deadline=POLICY, students=["correct_vectorised"], force=True)
    assert report.graded_now == 1 and report.reused == 3
    after = raw_lines(term["course"])
    assert after == before                                          # same grades, same bytes, every row


def test_a_changed_hidden_check_writes_regrades_naming_exactly_whom_it_moved(term, tmp_path):
    # The instructor makes the all-negative max-pool check use positive numbers: a bug that starts the
    # running max at 0 now passes it. Only that student's score may move.
    root = tmp_path / "course-root"
    shutil.copytree(ROOT / "source", root / "source")
    for name in ("settings.ini", "nbgrader_config.py"):
        shutil.copy(ROOT / name, root / name)
    path = root / "source" / "09_spatial" / "09_spatial.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    old = "_x = -np.abs(_rng.normal(size=(2, 2, 4, 4))) - 1.0"
    cell = next(c for c in nb["cells"] if old in "".join(c["source"]))
    cell["source"] = "".join(cell["source"]).replace(old, "_x = np.abs(_rng.normal(size=(2, 2, 4, 4))) + 1.0")
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    before = rows(term["course"])
    report = grade_batch(term["submitted"], root, term["course"], term["settings"], term["limits"], jobs=2,
                         progress=False, deadline=POLICY)
    assert report.regraded == 4 and report.graded_now == 4
    with open(term["course"] / "regrades.csv", newline="", encoding="utf-8") as handle:
        moved = list(csv.DictReader(handle))
    assert [row["student_id"] for row in moved] == ["bug_max_init_zero"]
    assert moved[0]["cells_changed"] == "max_pool2d_loops"
    assert float(moved[0]["new_score"]) > float(moved[0]["old_score"])
    after = rows(term["course"])
    for student in ("reference", "correct_vectorised", "untouched_release"):
        assert after[student]["score"] == before[student]["score"]
