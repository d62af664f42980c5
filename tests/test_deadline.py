"""Deadlines, grace, late penalties and extensions: the rules of settings.ini [deadline], no kernels."""
from datetime import datetime, timedelta, timezone

import pytest

from tito.grading.deadline import (DeadlineError, DeadlinePolicy, load_policy, parse_time, read_submitted_at,
                                        timestamp_beside)

DUE = datetime(2026, 12, 10, 23, 59, tzinfo=timezone.utc)


def policy(**changes):
    base = dict(due=DUE, grace_minutes=15, late_penalty_per_day=10, max_late_days=3)
    base.update(changes)
    return DeadlinePolicy(**base)


@pytest.mark.parametrize("text, expected", [
    ("2026-12-10T23:59:00+00:00", DUE),
    ("2026-12-11T00:59:00+01:00", DUE),
    ("2026-12-10T23:59:00Z", DUE),
    ("2026-12-10 23:59:00.000000 UTC", DUE),      # nbgrader's timestamp.txt
    ("2026-12-10 23:59:00", DUE),                  # no offset: UTC, as nbgrader reads it
])
def test_times_in_the_forms_courses_write(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "next tuesday-ish", "2026-13-45T99:00:00+00:00"])
def test_a_bad_time_names_what_was_expected(text):
    with pytest.raises(DeadlineError, match="expected a date and time"):
        parse_time(text, "settings.ini [deadline] due")


def test_on_time_and_within_grace_cost_nothing():
    on_time = policy().assess("ada", DUE - timedelta(hours=1))
    assert (on_time.late, on_time.late_by_hours, on_time.penalty(50, 60)) == (False, 0.0, 0)
    assert on_time.explain(50, 60) == ""
    in_grace = policy().assess("ada", DUE + timedelta(minutes=10))
    assert not in_grace.late and in_grace.penalty(50, 60) == 0
    assert "within the grace period" in in_grace.explain(50, 60)


def test_honest_late_submission_pays_per_started_day():
    late = policy(grace_minutes=0).assess("ada", DUE + timedelta(hours=26.5))
    assert (late.started_days, late.penalty_percent) == (2, 20)
    assert late.penalty(60, 60) == 12
    assert late.explain(60, 60) == "submitted 26.5 h late: 2 started days × 10 % of 60 = 12 points"
    assert late.penalty(5, 60) == 5      # never below zero


def test_grace_moves_the_start_of_the_first_day():
    just_after = policy(grace_minutes=15).assess("ada", DUE + timedelta(minutes=16))
    assert just_after.started_days == 1 and just_after.penalty(60, 60) == 6
    a_day = policy(grace_minutes=15).assess("ada", DUE + timedelta(hours=24, minutes=15))
    assert a_day.started_days == 1


def test_past_max_late_days_scores_zero_but_is_graded():
    too_late = policy().assess("ada", DUE + timedelta(days=4, hours=1))
    assert too_late.too_late and too_late.started_days == 5
    assert too_late.penalty(55, 60) == 55
    assert "past the 3 late days allowed" in too_late.explain(55, 60)


def test_an_extension_makes_it_on_time():
    extended = policy(extensions={"ada": DUE + timedelta(days=2)})
    assert not extended.assess("ada", DUE + timedelta(days=1)).late
    assert extended.assess("bob", DUE + timedelta(days=1)).late


def test_unknown_time_applies_no_penalty_and_says_so():
    unknown = policy().assess("ada", None)
    assert not unknown.known and unknown.penalty(60, 60) == 0
    assert unknown.explain(60, 60) == "submission time unknown: no late penalty applied"


def write_settings(folder, deadline: str):
    (folder / "settings.ini").write_text("[course]\ncourse_id = t\nmodules = 09_spatial\n" + deadline, encoding="utf-8")


def test_no_deadline_section_changes_nothing(tmp_path):
    write_settings(tmp_path, "")
    assert load_policy(tmp_path) is None


def test_settings_and_both_kinds_of_extension(tmp_path):
    write_settings(tmp_path, "[deadline]\ndue = 2026-12-10T23:59:00+00:00\ngrace_minutes = 15\n"
                             "late_penalty_per_day = 10\nmax_late_days = 3\nextensions = extensions.csv\n")
    (tmp_path / "extensions.csv").write_text("student_id,due,extra_days\nada,2026-12-12T12:00:00+00:00,\nbob,,1.5\n",
                                             encoding="utf-8")
    loaded = load_policy(tmp_path)
    assert loaded.max_late_days == 3 and loaded.grace_minutes == 15
    assert loaded.due_for("ada") == datetime(2026, 12, 12, 12, tzinfo=timezone.utc)
    assert loaded.due_for("bob") == DUE + timedelta(days=1.5)
    assert loaded.due_for("eve") == DUE


@pytest.mark.parametrize("deadline, message", [
    ("[deadline]\n", "due: expected a date and time"),
    ("[deadline]\ndue = 2026-12-10T23:59:00+00:00\nlate_penalty_per_day = ten\n", "late_penalty_per_day: expected a number"),
    ("[deadline]\ndue = 2026-12-10T23:59:00+00:00\nmax_late_days = -1\n", "max_late_days: expected a number ≥ 0"),
    ("[deadline]\ndue = 2026-12-10T23:59:00+00:00\nextensions = nowhere.csv\n", "nowhere.csv: file not found"),
])
def test_bad_settings_name_the_key(tmp_path, deadline, message):
    write_settings(tmp_path, deadline)
    with pytest.raises(DeadlineError, match=message):
        load_policy(tmp_path)


def test_submitted_at_csv_as_lms_exports_give(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("\ufeffstudent_id,submitted_at\nada,2026-12-11T02:00:00+00:00\n\n", encoding="utf-8")
    assert read_submitted_at(path) == {"ada": DUE + timedelta(hours=2, minutes=1)}
    path.write_text("student,when\nada,x\n", encoding="utf-8")
    with pytest.raises(DeadlineError, match="expected a header student_id,submitted_at"):
        read_submitted_at(path)


def test_timestamp_txt_beside_the_notebook(tmp_path):
    notebook = tmp_path / "ada" / "09_spatial" / "09_spatial.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}", encoding="utf-8")
    assert timestamp_beside(notebook) == (None, "")
    (notebook.parent / "timestamp.txt").write_text("2026-12-10 23:59:00.000000 UTC\n", encoding="utf-8")
    assert timestamp_beside(notebook) == (DUE, "")
    (notebook.parent / "timestamp.txt").write_text("garbage", encoding="utf-8")
    when, problem = timestamp_beside(notebook)
    assert when is None and "submission time unknown" in problem
