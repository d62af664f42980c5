"""`tito grade` on every sample of tests/submissions/ in ONE sandboxed batch: each sample's exact
score, status and detail; honest submissions in the same batch keep full marks; nothing leaks,
nothing outlives the batch, nobody's files change; the gradebook agrees; resume after a kill.

Small timeouts keep the faults quick (settings override, as `tito grade --cell-timeout` does).
Regenerate the samples after changing the notebook: tests/submissions/make_samples.py."""
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tito.grading import model as grading
from tito.grading.feedback import find_leaks
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for, load_assignment
from tito.grading.model import GradingError
from tito.grading.term import COLUMNS
from tito.grading.notebooks import cell_text, read_submission
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
FAST = dict(cell_timeout=10, submission_timeout=90, memory_mb=2048)
AUTO = 60          # the autograded cells
WRITTEN = 6        # three written answers, left for a person (tests/test_formgrader.py)
FULL = AUTO + WRITTEN

# -- what each sample must get ------------------------------------------------------------------
# (score, status, detail). Bugs lose exactly the cells whose concept they break; cheats earn no
# more than the bug they are built on (bug_max_init_zero, 48); faults cost only their own time.
# The table is tests/submissions/expected_grades.json (reviewed by hand; see its notes).
EXPECTED_FILE = ROOT / "tests" / "submissions" / "expected_grades.json"
HONEST = ("reference", "correct_", "fault_", "honest_", "wrong_file_name")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def orphan_kernels() -> list:
    "Processes of grading kernels whose private folder is gone (the kernel should be too)."
    orphans = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        home = next((item[5:].decode(errors="replace") for item in environ if item.startswith(b"HOME=")), "")
        if "/ttk-" in home and not Path(home).parent.exists():
            orphans.append((int(entry.name), home))
    return orphans


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    work = tmp_path_factory.mktemp("grading")
    submitted = work / "submitted"
    shutil.copytree(SAMPLES, submitted, symlinks=True)   # the link samples stay links
    before = {p.relative_to(work): sha(p) for p in submitted.rglob("*") if p.is_file() and not p.is_symlink()}
    course_before = {p: sha(ROOT / p) for p in (Path("source/09_spatial/09_spatial.ipynb"),
                                                Path("release/09_spatial/09_spatial.ipynb"))}
    out = work / "course"
    settings = load_settings(ROOT)
    report = grade_batch(submitted, ROOT, out, settings, limits_for(settings, sandbox=True, **FAST),
                         jobs=2, progress=False)
    time.sleep(1)   # a daemon that survived would write within seconds
    return SimpleNamespace(report=report, out=out, work=work, submitted=submitted, before=before,
                           course_before=course_before, rows=read_csv(out / "grades.csv"),
                           results={r.student: r for r in report.results})


def expected() -> dict:
    return json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))


def test_every_sample_is_in_the_batch_and_in_the_expectations(batch):
    students = {p.name for p in SAMPLES.iterdir() if p.is_dir() or p.is_symlink()}
    assert set(batch.rows) == students
    assert set(expected()) == students


@pytest.mark.parametrize("student", sorted(p.name for p in SAMPLES.iterdir() if p.is_dir() or p.is_symlink()))
def test_sample_gets_its_exact_score_status_and_detail(batch, student):
    score, status, detail = expected()[student]
    row = batch.rows[student]
    # A list names every detail that is right: a spinning fork bomb may lose the interrupt inside
    # os.fork's hooks (kernel replaced) or take it (cell interrupted), depending on where it lands.
    details = detail if isinstance(detail, list) else [detail]
    assert (float(row["score"]), row["status"]) == (score, status)
    assert row["detail"] in details, f"{row['detail']!r} is none of {details}"
    assert float(row["max_score"]) == FULL


def test_honest_submissions_keep_full_marks_beside_faults_and_cheats(batch):
    honest = {s: (float(r["score"]), float(r["needs_manual"])) for s, r in batch.rows.items() if s.startswith(HONEST)}
    assert len(honest) >= 15
    assert honest == {s: (AUTO, WRITTEN) for s in honest}   # every autograded point, the answers left to a person


def test_cheats_earn_nothing_beyond_the_bug_they_hide(batch):
    bug = batch.results["bug_max_init_zero"]
    for student, result in batch.results.items():
        if student.startswith("cheat_"):
            assert result.score <= bug.score, student
            gained = [g for g, points in result.cells.items() if points > bug.cells[g]]
            assert not gained, f"{student} gained {gained}"


def test_csv_columns_are_the_graded_cells_and_add_up(batch):
    assignment = load_assignment(batch.out, "09_spatial", "09_spatial.ipynb")
    with open(batch.out / "grades.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == COLUMNS + [g for g, _ in assignment.graded]
    for row in batch.rows.values():
        assert sum(float(row[g]) for g, _ in assignment.graded) == pytest.approx(float(row["score"]))


def test_gradebook_agrees_with_grades_csv(batch):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{batch.out / 'gradebook.db'}") as gb:
        scores = {s["student"]: s["score"] for s in gb.submission_dicts("09_spatial")}
    graded = {s: float(r["score"]) for s, r in batch.rows.items() if r["status"] != "missing"}
    assert scores == pytest.approx(graded)


def test_feedback_exists_names_the_concept_and_leaks_nothing(batch):
    assignment = load_assignment(batch.out, "09_spatial", "09_spatial.ipynb")
    for student in batch.rows:
        page = (batch.out / "feedback" / student / "09_spatial.html").read_text(encoding="utf-8")
        for marker in ("BEGIN HIDDEN", "BEGIN SOLUTION", "END HIDDEN", "BEGIN MARK SCHEME", "@@tinytorch-record@@"):
            assert marker not in page, (student, marker)
        path = next((p for p in (batch.submitted / student / "09_spatial").glob("*.ipynb")), None) \
            if (batch.submitted / student / "09_spatial").is_dir() else None
        try:
            own = "\n".join(cell_text(c) for c in read_submission(path.read_bytes()).cells) if path else ""
        except Exception:
            own = ""
        assert find_leaks(page, assignment.secrets, own) == [], student
    bug_page = (batch.out / "feedback" / "bug_max_init_zero" / "09_spatial.html").read_text(encoding="utf-8")
    assert "start the running max at -np.inf" in bug_page
    # partial credit: the checks of the -inf idea are lost, the cell's other checks keep their points
    kept = batch.rows["bug_max_init_zero"]["max_pool2d_loops"]
    assert 0 < float(kept) < 8 and f"max_pool2d_loops: {kept} / 8 points" in bug_page
    assert "✗" in bug_page and "✓" in bug_page


def test_feedback_pages_run_nothing_a_student_wrote_or_printed(batch):
    from html.parser import HTMLParser
    for student in ("hostile_feedback_html", "reference", "link_to_source"):
        page = (batch.out / "feedback" / student / "09_spatial.html").read_text(encoding="utf-8")
        tags = []

        class Page(HTMLParser):
            def handle_starttag(self, tag, attrs):
                tags.append((tag, dict(attrs)))
        Page().feed(page)
        names = [tag for tag, _ in tags]
        assert not {"script", "iframe", "svg", "object", "embed", "details", "form"} & set(names), student
        assert not [t for t in tags if any(name.startswith("on") for name in t[1])], student
        assert not [t for t in tags if any("javascript:" in (v or "").lower() for v in t[1].values())], student
        assert not [t for t in tags if t[0] == "img" and not t[1].get("src", "data:image/").startswith("data:image/")]
        meta = tags[names.index("head") + 1]
        assert meta[0] == "meta" and meta[1]["http-equiv"] == "Content-Security-Policy", student
        assert "script-src 'none'" in meta[1]["content"] and "default-src 'none'" in meta[1]["content"]
    hostile = (batch.out / "feedback" / "hostile_feedback_html" / "09_spatial.html").read_text(encoding="utf-8")
    assert "My notes on pooling." in hostile and "&lt;iframe srcdoc=" in hostile   # shown, as inert text
    assert "pwned-print" in hostile                                                 # the printed line, as text


def test_no_copy_of_a_students_notebook_is_left_in_tmp(batch):
    import tempfile
    from tito.grading import intake
    left = list(Path(tempfile.gettempdir()).glob(f"{intake.WORKDIR_PREFIX}{os.getpid()}.*"))
    assert left == []


def test_a_stolen_hidden_test_never_reaches_the_feedback(batch):
    # The cheat printed the hidden checks' source (the autograded copy shows it did) ...
    autograded = (batch.out / "autograded" / "cheat_steal_from_memory" / "09_spatial" / "09_spatial.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" in autograded.split('"outputs"', 1)[1]
    # ... and the page the student reads holds none of it (checked line by line above).


def test_no_file_outside_the_kernels_folder_changed_and_no_daemon_survived(batch):
    after = {p.relative_to(batch.work): sha(p) for p in batch.submitted.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == batch.before
    assert {p: sha(ROOT / p) for p in batch.course_before} == batch.course_before
    assert "forged" not in (batch.out / "grades.csv").read_text()
    assert not Path("/tmp/forged-grades.csv").exists()
    assert orphan_kernels() == []


def test_rerun_reuses_every_grade_and_regrades_a_changed_submission(batch):
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True, **FAST)
    csv_before = (batch.out / "grades.csv").read_text()
    again = grade_batch(batch.submitted, ROOT, batch.out, settings, limits, jobs=2, progress=False)
    assert (again.graded_now, again.reused) == (0, len(batch.rows))
    assert (batch.out / "grades.csv").read_text() == csv_before
    changed = batch.submitted / "untouched_release" / "09_spatial" / "09_spatial.ipynb"
    reference = batch.submitted / "reference" / "09_spatial" / "09_spatial.ipynb"
    original = changed.read_bytes()
    try:
        shutil.copy(reference, changed)   # the student finished it after all
        third = grade_batch(batch.submitted, ROOT, batch.out, settings, limits, jobs=2, progress=False)
        assert third.graded_now == 1
        assert read_csv(batch.out / "grades.csv")["untouched_release"]["score"] == "60"
    finally:
        changed.write_bytes(original)


def test_killed_batch_finishes_with_each_submission_graded_once_and_the_same_grades(batch, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    chosen = ["reference", "bug_max_init_zero", "untouched_release", "invalid_json", "bug_avg_divisor"]
    for student in chosen:
        shutil.copy(batch.submitted / student / "09_spatial" / "09_spatial.ipynb", flat / f"{student}.ipynb")
    out = tmp_path / "course"
    command = [sys.executable, "-m", "tito.cli", "grade", str(flat), "--out", str(out), "--jobs", "2",
               "--quiet", "--cell-timeout", str(FAST["cell_timeout"]),
               "--submission-timeout", str(FAST["submission_timeout"]), "--memory-mb", str(FAST["memory_mb"])]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    journal = out / grading.STATE / "results"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None and len(list(journal.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)   # the grader and everything it started, mid-batch
    first.wait()
    assert len(list(journal.glob("*.json"))) < len(chosen), "the batch finished before it could be killed"
    import tempfile
    from tito.grading import intake
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    # the killed grader's private copies of students' notebooks are gone after the next run
    assert list(Path(tempfile.gettempdir()).glob(f"{intake.WORKDIR_PREFIX}{first.pid}.*")) == []
    rows = read_csv(out / "grades.csv")
    with open(out / "grades.csv") as handle:
        assert [line.split(",")[0] for line in handle][1:] == sorted(chosen)
    for student in chosen:
        mine, theirs = dict(rows[student]), dict(batch.rows[student])
        assert mine == theirs, student
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        submissions = [s["student"] for s in gb.submission_dicts("09_spatial")]
    assert sorted(submissions) == sorted(chosen)


def test_grading_refuses_without_a_sandbox_unless_told(batch, tmp_path, monkeypatch):
    settings = load_settings(ROOT)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(batch.submitted / "invalid_json" / "09_spatial" / "09_spatial.ipynb", flat / "ann.ipynb")
    from tito.grading import course
    monkeypatch.setattr(course, "sandbox_available", lambda: (False, "bwrap: no user namespaces"))
    with pytest.raises(GradingError, match="--no-sandbox"):
        grade_batch(flat, ROOT, tmp_path / "refused", settings, limits_for(settings, sandbox=True), progress=False)
    out = tmp_path / "unsandboxed"
    (out / grading.STATE).mkdir(parents=True)
    for cached in (batch.out / grading.STATE).glob("reference-*.json"):
        shutil.copy(cached, out / grading.STATE / cached.name)   # no need to run the reference again
    report = grade_batch(flat, ROOT, out, settings, limits_for(settings, sandbox=False), progress=False)
    assert read_csv(report.csv_path)["ann"]["detail"].startswith("sandbox off; not JSON")


def tree_contents(folder: Path) -> dict:
    "{relative path: bytes} of the files under `folder`, a link standing for where it points (never followed)."
    contents = {}
    for path in folder.rglob("*"):
        if path.is_symlink():
            contents[path.relative_to(folder)] = b"link to " + os.readlink(path).encode()
        elif path.is_file():
            contents[path.relative_to(folder)] = path.read_bytes()
    return contents


def test_samples_follow_the_current_notebook(tmp_path):
    "The committed samples are what make_samples.py writes from today's source/ and release/."
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "submissions" / "make_samples.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    fresh, committed = tree_contents(tmp_path / "submitted"), tree_contents(SAMPLES)
    stale = sorted(str(p) for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    assert not stale, f"regenerate with tests/submissions/make_samples.py: {stale[:5]}"
