"""What cannot live as a file in tests/submissions/ (issue 12): two graders at once, a full disk,
a leak in one student's page, the private working copies a killed grader leaves, and notebooks
too large to keep as samples (300,000 cells; JSON that would take the grader's memory).

Grading here is unsandboxed and kernel-free where it can be (invalid and missing notebooks need
no kernel); the reference run is done once per module and cached."""
import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tito.grading import feedback as fb
from tito.grading import model as grading
from tito.grading import gradebook as gradebook_module, report as report_module
from tito.grading import intake
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for, load_assignment
from tito.grading.model import GradingError, Submission
from tito.grading.pipeline import grade_one
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
NOTEBOOK = "09_spatial/09_spatial.ipynb"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    "A course folder whose reference records are cached, and a class of two unreadable notebooks."
    work = tmp_path_factory.mktemp("robust")
    flat = work / "flat"
    flat.mkdir()
    shutil.copy(SAMPLES / "invalid_json" / NOTEBOOK, flat / "ann.ipynb")
    shutil.copy(SAMPLES / "deep_nesting" / NOTEBOOK, flat / "bob.ipynb")
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=False, cell_timeout=20, submission_timeout=120)
    out = work / "course"
    report = grade_batch(flat, ROOT, out, settings, limits, progress=False)
    return work, flat, out, settings, limits, report


def rows(out: Path) -> dict:
    import csv
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def test_the_class_is_graded(course):
    work, flat, out, settings, limits, report = course
    assert {r.student: r.status for r in report.results} == {"ann": "invalid", "bob": "invalid"}


def test_a_second_grader_of_the_same_course_folder_is_refused_plainly(course, tmp_path):
    work, flat, out, settings, limits, report = course
    with intake.course_lock(out / grading.STATE):
        with pytest.raises(GradingError, match=r"another `tito grade` \(pid \d+\) is grading this course folder"):
            grade_batch(flat, ROOT, out, settings, limits, progress=False)
        cli = subprocess.run([sys.executable, "-m", "tito.cli", "grade", str(flat), "--out", str(out),
                              "--no-sandbox", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1
    assert "another `tito grade`" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
    again = grade_batch(flat, ROOT, out, settings, limits, progress=False)   # the lock is free again
    assert again.reused == 2


class _DiskFullError(Exception):
    "Stands for SQLAlchemy's OperationalError, as nbgrader's gradebook raises it on a full disk."


_DiskFullError.__name__ = "OperationalError"


@pytest.mark.parametrize("where", ["gradebook", "grades.csv"])
def test_a_full_disk_ends_the_run_plainly_keeps_grades_csv_whole_and_a_rerun_finishes(course, tmp_path,
                                                                                       monkeypatch, where):
    work, flat, out, settings, limits, report = course
    course_copy = tmp_path / "course"
    shutil.copytree(out, course_copy)
    before = (course_copy / "grades.csv").read_bytes()
    more = tmp_path / "flat"
    shutil.copytree(flat, more)
    shutil.copy(SAMPLES / "too_many_cells" / NOTEBOOK, more / "cid.ipynb")
    if where == "gradebook":
        def full(self, result):
            raise _DiskFullError("(sqlite3.OperationalError) database or disk is full")
        monkeypatch.setattr(gradebook_module.Gradebook, "write", full)
    else:
        real = report_module.atomic_write

        def full(path, data, mode="w"):
            if Path(path).name == "grades.csv":
                handle, temp = tempfile.mkstemp(dir=Path(path).parent, prefix=".grades.csv.", suffix=".tmp")
                os.close(handle)
                Path(temp).unlink()   # what atomic_write does with its temp file when the write fails
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, data, mode)
        monkeypatch.setattr(report_module, "atomic_write", full)
    with pytest.raises(GradingError) as raised:
        grade_batch(more, ROOT, course_copy, settings, limits, progress=False)
    message = str(raised.value)
    assert message.startswith(f"the disk holding {course_copy.resolve()}") and "run `tito grade` again" in message
    assert "sqlite" not in message and "Traceback" not in message
    assert (course_copy / "grades.csv").read_bytes() == before
    assert not list(course_copy.glob(".grades.csv.*"))
    monkeypatch.undo()
    finished = grade_batch(more, ROOT, course_copy, settings, limits, progress=False)
    assert sorted(rows(course_copy)) == ["ann", "bob", "cid"]
    # cid's journal entry is written before grades.csv: a rerun reuses it
    assert (finished.graded_now, finished.reused) == ((1, 2) if where == "gradebook" else (0, 3))


def test_a_leak_withholds_that_page_flags_that_row_and_never_stops_the_batch(course, tmp_path, monkeypatch, capsys):
    work, flat, out, settings, limits, report = course
    more = tmp_path / "flat"
    more.mkdir()
    for student in ("ann", "bob"):
        shutil.copy(flat / f"{student}.ipynb", more / f"{student}.ipynb")
    shutil.copy(SAMPLES / "reference" / NOTEBOOK, more / "cid.ipynb")
    course_copy = tmp_path / "course"
    shutil.copytree(out, course_copy)
    real = fb.find_leaks

    def leaky(body, secrets, own):   # as if the pages of cid (graded) and bob (unreadable) showed a solution line
        if "Feedback: 09_spatial, cid" in body or "Feedback: 09_spatial, bob" in body:
            return ["solution line 'best = -np.inf'"]
        return real(body, secrets, own)
    monkeypatch.setattr(fb, "find_leaks", leaky)
    result = grade_batch(more, ROOT, course_copy, settings, limits, progress=False)
    by_student = {r.student: r for r in result.results}
    assert by_student["cid"].status == "graded" and by_student["cid"].score == 60
    for student in ("bob", "cid"):
        assert by_student[student].withheld
        assert by_student[student].notes[-1] == ["withheld", "feedback withheld for the instructor's review: "
                                                             "the page would have shown 1 line of hidden or solution text"]
        page = (course_copy / "feedback" / student / "09_spatial.html").read_text()
        assert "withheld until your instructor has reviewed it" in page and "np.inf" not in page
        assert rows(course_copy)[student]["detail"].endswith("1 line of hidden or solution text")
    assert not by_student["ann"].withheld
    warned = capsys.readouterr().err
    assert "WARNING: the feedback page of cid would have shown secret text" in warned
    assert "WARNING: the feedback page of bob" in warned


def test_300000_empty_cells_are_refused_by_a_child_without_the_graders_memory(course, tmp_path):
    work, flat, out, settings, limits, report = course
    assignment = load_assignment(out, "09_spatial", "09_spatial.ipynb")
    path = tmp_path / "many.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": [],
                                           "execution_count": None}] * 300_000,
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert path.stat().st_size > intake.PRECHECK_BYTES
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = grade_one(Submission("many", path), assignment, {}, limits, tmp_path / "out")
    assert (result.status, result.score) == ("invalid", 0.0)
    assert result.detail.startswith("it has 300,000 cells, more than the 2,000 a notebook may have")
    # the grader itself never parsed it (a parse of this file takes several hundred MB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 * 1024


def test_json_that_would_take_the_graders_memory_is_invalid_with_the_setting_named(course, tmp_path):
    work, flat, out, settings, limits, report = course
    assignment = load_assignment(out, "09_spatial", "09_spatial.ipynb")
    path = tmp_path / "dense.ipynb"
    # ~2 million empty objects in 6 MB: about 150 MB once parsed
    path.write_bytes(b'{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"x": ['
                     + b",".join([b"{}"] * 2_000_000) + b"]}}")
    from dataclasses import replace
    result = grade_one(Submission("dense", path), assignment, {}, replace(limits, grader_memory_mb=64),
                       tmp_path / "out")
    assert (result.status, result.score) == ("invalid", 0.0)
    assert result.detail == ("reading it would take more than the 64 MiB of the grader's memory a "
                             "submission may use (grader_memory_mb): clear its outputs, save and submit again")


def test_working_copies_are_private_and_a_killed_graders_are_removed_on_the_next_run(tmp_path):
    mine = intake.private_workdir()
    try:
        assert (mine.stat().st_mode & 0o777) == 0o700 and mine.stat().st_uid == os.geteuid()
        # a grader that was killed: a pid that runs no more (or another process with a new start time)
        dead = Path(tempfile.gettempdir()) / f"{intake.WORKDIR_PREFIX}{os.getpid()}.1-stale"
        dead.mkdir(mode=0o700)
        (dead / "09_spatial.ipynb").write_text("a student's notebook")
        removed = intake.clean_stale_workdirs()
        assert dead in removed and not dead.exists()
        assert mine.exists() and mine not in removed    # this grader's own folder is in use
    finally:
        shutil.rmtree(mine, ignore_errors=True)


def test_an_archive_is_graded_from_its_regular_files_and_a_link_member_refuses_its_student(course, tmp_path):
    import stat
    import zipfile
    work, flat, out, settings, limits, report = course
    archive = tmp_path / "class.zip"

    def link(bundle, name, target):
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, target)
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(flat / "ann.ipynb", "ann.ipynb")
        link(bundle, "bob.ipynb", str(ROOT / "source" / "09_spatial" / "09_spatial.ipynb"))
        link(bundle, "cid/09_spatial/09_spatial.ipynb", "../../../../source/09_spatial/09_spatial.ipynb")
        bundle.writestr("../escaped.ipynb", "{}")
    course_copy = tmp_path / "course"
    shutil.copytree(out, course_copy)
    result = grade_batch(archive, ROOT, course_copy, settings, limits, progress=False)
    got = {r.student: (r.status, r.detail) for r in result.results}
    assert got == {
        "ann": ("invalid", "sandbox off; not JSON (line 3, column 1: Expecting value)"),
        "bob": ("invalid", "sandbox off; archive member bob.ipynb is a symbolic link; links are never followed, "
                           "so it was not unpacked"),
        "cid": ("invalid", "sandbox off; archive member cid/09_spatial/09_spatial.ipynb is a symbolic link; links "
                           "are never followed, so it was not unpacked")}
    unpacked = course_copy / grading.STATE / "unpacked" / "class.zip"
    assert sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()) == ["ann.ipynb"]
    assert not (course_copy / grading.STATE / "unpacked" / "escaped.ipynb").exists()
    assert not (tmp_path / "escaped.ipynb").exists() and not any(p.is_symlink() for p in unpacked.rglob("*"))
    assert (unpacked.stat().st_mode & 0o777) == 0o700


def test_a_grader_bug_on_one_notebook_costs_that_row_only_and_it_still_gets_a_page(course, tmp_path, monkeypatch):
    work, flat, out, settings, limits, report = course
    more = tmp_path / "flat"
    shutil.copytree(flat, more)
    shutil.copy(SAMPLES / "empty_notebook" / NOTEBOOK, more / "dan.ipynb")
    course_copy = tmp_path / "course"
    shutil.copytree(out, course_copy)

    def broken(*args, **kwargs):
        raise KeyError("a bug of the grader's own")
    monkeypatch.setattr(grading, "restore_cells", broken)
    result = grade_batch(more, ROOT, course_copy, settings, limits, progress=False)
    dan = {r.student: r for r in result.results}["dan"]
    assert (dan.status, dan.score) == ("crashed", 0.0)
    assert dan.detail == "internal grading error, tell the instructor: KeyError: \"a bug of the grader's own\""
    assert "the grader could not grade it" in (course_copy / "feedback" / "dan" / "09_spatial.html").read_text()
