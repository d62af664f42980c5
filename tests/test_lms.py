"""Canvas downloads in (folder and zip: late, resubmitted, oddly named), grades out (Canvas gradebook,
Gradescope, Moodle, JSON, each parsed back), and Gradescope's autograder zip run for real under a
stand-in for /autograder on sample submissions."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import nbformat
import pytest

from tito.grading.term import COLUMNS

from tito.grading import gradescope, lms, sandbox
from tito.grading.sandbox import launch, sandbox_available
from tito.grading.feedback import find_leaks
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for, load_assignment
from tito.grading.find import discover, discover_submissions
from tito.grading.model import GradingError
from tito.grading.summary import read_grades, summarise
from tito.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
NOTEBOOK = "09_spatial.ipynb"
SCHEMA = json.loads((ROOT / "tests" / "lms" / "gradescope_results.schema.json").read_text())
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sample(name: str) -> Path:
    return SAMPLES / name / "09_spatial" / NOTEBOOK


def canvas_folder(folder: Path) -> Path:
    """A Canvas download: Jane resubmitted late (her first upload was buggy, her -1 re-upload is the
    reference), Bob's correct notebook has another name, Kim handed in the max-pool bug, Ann only a PDF."""
    folder.mkdir(parents=True)
    shutil.copy(sample("bug_avg_divisor"), folder / "doejane_12345_1001_09_spatial.ipynb")
    shutil.copy(sample("reference"), folder / "doejane_LATE_12345_1500_09_spatial-1.ipynb")
    shutil.copy(sample("correct_vectorised"), folder / "smithbob_222_1002_my solution.ipynb")
    shutil.copy(sample("bug_max_init_zero"), folder / "leekim_333_1003_09_spatial.ipynb")
    (folder / "leeann_444_1004_report.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    return folder


# ---------------------------------------------------------------- Canvas names and intake (no kernels)

@pytest.mark.parametrize("name, expected", [
    ("doejane_12345_67890_09_spatial.ipynb", ("12345", "doejane", False, 67890, "09_spatial.ipynb")),
    ("doejane_LATE_12345_67890_09_spatial-1.ipynb", ("12345", "doejane", True, 67890, "09_spatial-1.ipynb")),
    ("anon_x7Kq2_67890_09_spatial.ipynb", ("anon_x7Kq2", "", False, 67890, "09_spatial.ipynb")),
    ("LATE_anon_x7Kq2_5_09_spatial.ipynb", ("anon_x7Kq2", "", True, 5, "09_spatial.ipynb")),
    ("o2brienséan_7_8_my_2_notes_v3.ipynb", ("7", "o2brienséan", False, 8, "my_2_notes_v3.ipynb")),
])
def test_canvas_file_names_follow_canvas_rules(name, expected):
    parsed = lms.parse_canvas_name(name)
    assert (parsed.student, parsed.name, parsed.late, parsed.attachment, parsed.file_name) == expected


@pytest.mark.parametrize("name", ["ann.ipynb", "doejane_09_spatial.ipynb", "doejane_x_y_z.ipynb"])
def test_other_names_are_not_canvas_names(name):
    assert lms.parse_canvas_name(name) is None


def test_canvas_folder_grades_the_latest_notebook_and_says_what_else_it_found(tmp_path):
    folder = canvas_folder(tmp_path / "download")
    assert lms.is_canvas_download(folder) and not lms.is_canvas_download(SAMPLES)
    subs = {s.student: s for s in discover(folder, "09_spatial", NOTEBOOK)}
    assert sorted(subs) == ["12345", "222", "333", "444"]
    jane = subs["12345"]
    assert jane.path.name == "doejane_LATE_12345_1500_09_spatial-1.ipynb" and jane.lms_late is True
    assert jane.student_name == "doejane"
    assert jane.problem == "graded 09_spatial-1.ipynb, the latest of 2 notebooks (not graded: 09_spatial.ipynb)"
    assert subs["222"].problem == "graded my solution.ipynb: expected the file name 09_spatial.ipynb"
    assert subs["333"].problem == "" and subs["333"].lms_late is False
    assert subs["444"].path is None and subs["444"].problem == "no notebook submitted (only report.pdf)"


def test_a_notebook_named_like_the_assignment_wins_over_a_later_other_one(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    for name in ("kim_9_10_09_spatial.ipynb", "kim_9_11_scratch.ipynb"):
        (folder / name).write_text("{}")
    (only,) = discover(folder, "09_spatial", NOTEBOOK)
    assert only.path.name == "kim_9_10_09_spatial.ipynb"
    assert only.problem == "graded 09_spatial.ipynb, the latest of 2 notebooks (not graded: scratch.ipynb)"


def _zip(path: Path, members: dict, links: dict = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return path


def test_canvas_zip_is_read_like_the_folder(tmp_path):
    folder = canvas_folder(tmp_path / "download")
    members = {p.name: p.read_bytes() for p in folder.iterdir()}
    archive = _zip(tmp_path / "submissions.zip", {**members, "__MACOSX/._doejane_12345_1001_09_spatial.ipynb": "x"})
    from_zip = discover(archive, "09_spatial", NOTEBOOK)
    (folder / "__MACOSX").mkdir()
    from_folder = discover(folder, "09_spatial", NOTEBOOK)
    assert [(s.student, s.student_name, s.lms_late, s.problem, s.digest()) for s in from_zip] == \
           [(s.student, s.student_name, s.lms_late, s.problem, s.digest()) for s in from_folder]


@pytest.mark.parametrize("members, links, words", [
    ({"../escape_1_2_09_spatial.ipynb": "{}"}, None, "outside the folder"),
    ({"/abs_1_2_09_spatial.ipynb": "{}"}, None, "outside the folder"),
    ({}, {"link_1_2_09_spatial.ipynb": "/etc/passwd"}, "link or special file"),
    ({"bomb_1_2_09_spatial.ipynb": "0" * (8 * 2**20)}, None, "zip bomb"),
])
def test_a_hostile_zip_is_refused_with_a_reason(tmp_path, members, links, words):
    archive = _zip(tmp_path / "evil.zip", members, links)
    with pytest.raises(GradingError, match=words):
        discover(archive, "09_spatial", NOTEBOOK)
    assert not (tmp_path / "escape_1_2_09_spatial.ipynb").exists()


def test_zip_caps_on_files_and_bytes(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"s_{i}_{i}_n.ipynb": "{}" for i in range(5)})
    with pytest.raises(lms.LmsError, match="5 files, more than the 4"):
        lms.extract_zip(archive, tmp_path / "a", max_files=4)
    (tmp_path / "b").mkdir()
    with pytest.raises(lms.LmsError, match="more than"):
        lms.extract_zip(_zip(tmp_path / "big.zip", {"s_1_1_n.ipynb": "x" * 5000}), tmp_path / "b", max_bytes=4000)
    (tmp_path / "nozip.zip").write_text("not a zip")
    with pytest.raises(GradingError, match="is not an archive that can be read"):
        discover_submissions(tmp_path / "nozip.zip", "09_spatial", NOTEBOOK, tmp_path / "state", 64)


def test_grades_csv_is_read_by_column_names(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text("student_name,student_id,late,score,max_score,status,detail,conv,pool\n"
                    "ann,1,yes,20,40,graded,pooling is wrong [pool],20,0\n"
                    "bob,2,,40,40,graded,,20,20\n")
    rows, cells = read_grades(path)
    assert cells == ["conv", "pool"] and rows[0]["late"] == "yes"
    summary = summarise(path)
    assert summary.mean == 30 and summary.concepts == [("pooling is wrong", 1)]
    path.write_text("student_id,score\n1,2\n")
    with pytest.raises(ValueError, match="missing"):
        read_grades(path)


# ---------------------------------------------------------------- grade a Canvas download, export it

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    "`tito grade` (grade_batch) of the Canvas zip: 3 kernels, the reference run once."
    base = tmp_path_factory.mktemp("canvas")
    folder = canvas_folder(base / "download")
    archive = _zip(base / "submissions.zip", {p.name: p.read_bytes() for p in folder.iterdir()})
    settings = load_settings(ROOT)
    sandboxed = sandbox_available()[0]
    report = grade_batch(archive, ROOT, base / "course", settings, limits_for(settings, sandbox=sandboxed),
                         jobs=2, progress=False)
    with open(report.csv_path, newline="", encoding="utf-8") as handle:
        rows = {r["student_id"]: r for r in csv.DictReader(handle)}
    return SimpleNamespace(base=base, course=base / "course", csv=report.csv_path, rows=rows,
                           assignment=load_assignment(base / "course", "09_spatial", NOTEBOOK))


def test_canvas_download_is_graded_with_name_late_and_notes(graded):
    rows = graded.rows
    assert {s: (r["student_name"], r["lms_late"], r["status"]) for s, r in rows.items()} == {
        "12345": ("doejane", "yes", "graded"), "222": ("smithbob", "no", "graded"),
        "333": ("leekim", "no", "graded"), "444": ("leeann", "no", "missing")}
    assert float(rows["12345"]["score"]) == 60 and float(rows["222"]["score"]) == 60
    assert float(rows["333"]["score"]) < 60 and "[max_pool2d_loops" in rows["333"]["detail"]
    assert rows["12345"]["detail"].startswith("graded 09_spatial-1.ipynb, the latest of 2 notebooks")
    assert rows["222"]["detail"].startswith("graded my solution.ipynb: expected the file name")
    header = next(csv.reader(graded.csv.open()))
    assert header[:len(COLUMNS)] == COLUMNS
    concepts = [reason for reason, _ in summarise(graded.csv).concepts]
    assert any(c.startswith("misconception: the running max starts at 0") for c in concepts)
    assert not [c for c in concepts if c.startswith(("graded ", "no notebook"))]   # intake notes are not concepts


GRADEBOOK = """Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (10),Module 09: CNN (777),Current Score,Final Score
    Points Possible,,,,,10.00,66.00,(read only),(read only)
"Doe, Jane",12345,jd1,jdoe,Section 1,5.00,,50.00,50.00
"Smith, Bob",222,bs2,bsmith,Section 1,7.00,,70.00,70.00
"Lee, Kim",333,kl3,klee,Section 1,8.00,,80.00,80.00
"Lee, Ann",444,al4,alee,Section 1,9.00,,90.00,90.00
"Gradedby, Hand",555,gh5,ghand,Section 2,6.00,41.50,60.00,60.00
"""


def canvas_accepts(text: str, students: set) -> list:
    """The rules of Canvas's GradebookImporter (app/models/gradebook_importer.rb) a file must meet:
    problems found, empty when Canvas would read it."""
    rows = list(csv.reader(io.StringIO(text)))
    header, problems = rows[0], []
    if not (len(header) > 3 and "Student" in header[0] and "ID" in header[1]):
        problems.append(f"header {header[:3]} does not start Student, ID")
    if "Section" not in header[:6]:
        problems.append("no Section column after the student columns")
    if not any(r and "Points Possible" in r[0] for r in rows[1:]):
        problems.append("no Points Possible row")
    for row in rows[1:]:
        if len(row) != len(header):
            problems.append(f"row of {len(row)} cells under a header of {len(header)}")
        elif "Points Possible" not in row[0] and row[1] not in students:
            problems.append(f"unknown student id {row[1]}")
    return problems


def test_canvas_gradebook_is_filled_as_canvas_imports_it(graded, tmp_path):
    gradebook = tmp_path / "export.csv"
    gradebook.write_text(GRADEBOOK, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "tito.cli", "export-grades", "--grades", str(graded.csv),
                           "--canvas", str(gradebook), "--assignment", "Module 09: CNN", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 scores written; 1 without a submission, left blank (never zeroed): 444" in done.stdout
    text = (tmp_path / "canvas-import.csv").read_text(encoding="utf-8")
    assert canvas_accepts(text, {"12345", "222", "333", "444", "555"}) == []
    before, after = list(csv.reader(io.StringIO(GRADEBOOK))), list(csv.reader(io.StringIO(text)))
    assert after[:2] == before[:2]                          # header and Points Possible kept
    column = before[0].index("Module 09: CNN (777)")
    scores = {row[1]: row[column] for row in after[2:]}
    for student in ("12345", "222", "333"):
        assert float(scores[student]) == float(graded.rows[student]["score"])
    assert scores["444"] == ""                              # no submission: blank, never 0
    assert scores["555"] == "41.50"                         # not graded here: as Canvas had it
    for old, new in zip(before[2:], after[2:]):              # nothing else touched
        assert old[:column] + old[column + 1:] == new[:column] + new[column + 1:]
    assert "1 students of the gradebook have no row in grades.csv, left as they were" in done.stdout


def test_canvas_export_names_what_it_cannot_do(graded, tmp_path):
    grades = lms.read_grades(graded.csv)
    short = tmp_path / "short.csv"
    short.write_text(GRADEBOOK.replace('"Smith, Bob",222,bs2,bsmith,Section 1,7.00,,70.00,70.00\n', "")
                     .replace("66.00,(read", "100.00,(read"), encoding="utf-8")
    with pytest.raises(lms.LmsError, match="worth 100.00 points, grades.csv 66: pass --scale"):
        lms.canvas_import(grades, short, "Module 09: CNN", tmp_path / "o.csv")
    report = lms.canvas_import(grades, short, "Module 09: CNN (777)", tmp_path / "o.csv", scale=True)
    assert report.unknown == ["222"] and "not in the gradebook, NOT exported: 222" in " ".join(report.lines())
    scaled = {r[1]: r[6] for r in csv.reader((tmp_path / "o.csv").open()) if r[1].isdigit()}
    assert float(scaled["12345"]) == pytest.approx(100 * 60 / 66, abs=0.01)   # the written answers are still to grade
    with pytest.raises(lms.LmsError, match="no column 'Module 10' in the gradebook; its assignment columns are"):
        lms.canvas_import(grades, short, "Module 10", tmp_path / "o.csv")
    (tmp_path / "not.csv").write_text("name,score\nann,3\n")
    with pytest.raises(lms.LmsError, match="expected a Canvas gradebook export"):
        lms.canvas_import(grades, tmp_path / "not.csv", "x", tmp_path / "o.csv")


def test_semicolon_gradebook_keeps_its_delimiter_and_bom(graded, tmp_path):
    gradebook = tmp_path / "export.csv"
    gradebook.write_bytes(b"\xef\xbb\xbf" + GRADEBOOK.replace(",", ";").replace("66.00;(read", "66,00;(read").encode())
    lms.canvas_import(lms.read_grades(graded.csv), gradebook, "Module 09: CNN", tmp_path / "o.csv")
    raw = (tmp_path / "o.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert float(rows[2][6]) == float(graded.rows["12345"]["score"])


def test_gradescope_moodle_and_json_exports_parse_back(graded, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tito.cli", "export-grades", "--grades", str(graded.csv),
                             "--gradescope", "--moodle", "--json", "--assignment", "Module 09", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    scope = list(csv.DictReader((tmp_path / "gradescope.csv").open(encoding="utf-8")))
    assert list(scope[0]) == lms.GRADESCOPE_HEADER
    assert {r["SID"]: (r["Total Score"], r["Status"]) for r in scope} == {
        s: ("" if r["status"] == "missing" else f"{float(r['score']):g}", "Missing" if r["status"] == "missing"
            else "Graded") for s, r in graded.rows.items()}
    moodle = list(csv.DictReader((tmp_path / "moodle.csv").open(encoding="utf-8")))
    assert list(moodle[0]) == ["ID number", "Module 09", "Feedback"]
    assert {r["ID number"]: float(r["Module 09"]) for r in moodle} == {
        s: float(r["score"]) for s, r in graded.rows.items() if r["status"] != "missing"}   # 444 left out
    document = json.loads((tmp_path / "grades.json").read_text(encoding="utf-8"))
    assert document["format"] == "tinytorch-grades" and document["max_score"] == 66   # 60 autograded + 6 written
    assert document["provenance"]["grades_csv_sha256"] == lms.read_grades(graded.csv).sha256
    by_id = {s["student_id"]: s for s in document["students"]}
    assert set(by_id) == set(graded.rows)
    for student, row in graded.rows.items():
        entry = by_id[student]
        assert sum(c["score"] for c in entry["checks"]) == pytest.approx(entry["score"]) == float(row["score"])
        assert entry["lms_late"] == {"yes": True, "no": False}[row["lms_late"]]
    kim = {c["grade_id"]: c for c in by_id["333"]["checks"]}
    assert kim["max_pool2d_loops"]["passed"] is False and kim["max_pool2d_loops"]["reasons"]
    assert by_id["12345"]["submission_hash"] and by_id["444"]["submission_hash"] == "missing"
    assert "444" in result.stdout and "left out" in result.stdout


def test_export_grades_refuses_unclear_requests(graded, tmp_path):
    def tito(*args):
        return subprocess.run([sys.executable, "-m", "tito.cli", "export-grades", *args], capture_output=True,
                              text=True, cwd=ROOT, env=ENV, timeout=120)
    nothing = tito("--grades", str(graded.csv))
    assert nothing.returncode == 2 and "say what to write" in nothing.stderr
    no_name = tito("--grades", str(graded.csv), "--canvas", str(graded.csv))
    assert no_name.returncode == 2 and "--canvas needs --assignment" in no_name.stderr
    missing = tito("--grades", str(tmp_path / "none.csv"), "--json")
    assert missing.returncode == 1 and "not found: run `tito grade` first" in missing.stderr
    assert "Traceback" not in nothing.stderr + no_name.stderr + missing.stderr


# ---------------------------------------------------------------- Gradescope's autograder, for real

CHEAT_SOURCE = """import os
for path in {paths!r}:
    try:
        with open(path) as handle:
            text = handle.read()
        print('READ', path, 'BEGIN HIDDEN TESTS' in text, text[:2000])
    except OSError as error:
        print('DENIED', type(error).__name__)
"""


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    "The zip `tito gradescope` builds (the reference solution run once, at build time)."
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    result = subprocess.run([sys.executable, "-m", "tito.cli", "gradescope", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def run_autograder(zip_path: Path, root: Path, notebook: Path, name: str = NOTEBOOK) -> tuple:
    "Lay out `root` as Gradescope's /autograder, run the zip's run_autograder there: (results, stdout)."
    (root / "submission").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
    if notebook is not None:
        shutil.copy(notebook, root / "submission" / name)
    env = {**ENV, gradescope.ROOT_VARIABLE: str(root), "TITO_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8")), done.stdout + done.stderr


def test_autograder_zip_has_what_gradescope_needs(autograder):
    with zipfile.ZipFile(autograder) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        requirements = archive.read("requirements.txt").decode()
        setup = archive.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "course/settings.ini",
            "course/source/09_spatial/09_spatial.ipynb"} <= set(names)
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert any(n.startswith("course/.tito-grade/reference-") for n in names)
    assert any(n == "package/tito/grading/pipeline.py" for n in names)
    import numpy
    assert f"numpy=={numpy.__version__}" in requirements.splitlines() and "torch==" not in requirements
    assert "chmod -R go-rwx /autograder/source" in setup


def test_gradescope_run_scores_like_tito_grade(graded, autograder, tmp_path):
    secrets = graded.assignment.secrets
    for sample_name, student in (("reference", "12345"), ("bug_max_init_zero", "333")):
        results, stdout = run_autograder(autograder, tmp_path / sample_name, sample(sample_name))
        jsonschema.validate(results, SCHEMA)
        row = graded.rows[student]
        assert results["score"] == float(row["score"])
        assert {t["name"]: t["score"] for t in results["tests"]} == {g: float(row[g]) for g, _ in graded.assignment.graded}
        assert {t["name"]: t["max_score"] for t in results["tests"]} == dict(graded.assignment.graded)
        assert {t["visibility"] for t in results["tests"]} == {"after_published"}   # settings.ini [gradescope]
        assert results["stdout_visibility"] == "hidden"
        text = json.dumps(results, ensure_ascii=False)
        for shown in (text, stdout):
            assert "BEGIN HIDDEN" not in shown and "BEGIN SOLUTION" not in shown
            assert find_leaks("\n".join(t["output"] for t in results["tests"]) + stdout, secrets, "") == []
    failed = {t["name"]: t for t in results["tests"] if t["status"] == "failed"}
    assert "max_pool2d_loops" in failed and results["score"] < 60
    assert "start the running max at -np.inf" in failed["max_pool2d_loops"]["output"]   # the concept, named
    named = "misconception: the running max starts at 0"                 # the course's misconception library
    assert named in failed["max_pool2d_loops"]["output"] and named in graded.rows["333"]["detail"]


def test_the_kernel_cannot_read_the_hidden_checks(autograder, tmp_path):
    root = tmp_path / "autograder"
    hidden = [root / "source" / "course" / "source" / "09_spatial" / NOTEBOOK,
              root / "source" / "package" / "tinytorch" / "core" / "spatial.py"]
    cheat = nbformat.read(sample("reference"), as_version=4)
    cheat.cells.insert(1, nbformat.v4.new_code_cell(CHEAT_SOURCE.format(paths=[str(p) for p in hidden])))
    path = tmp_path / "cheat.ipynb"
    nbformat.write(cheat, path)
    results, stdout = run_autograder(autograder, root, path)
    assert results["score"] == 60                                  # cheating costs nothing, gains nothing
    executed = nbformat.read(next((root / "tito-work" / "autograded").rglob(NOTEBOOK)), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                      for o in c.get("outputs", []) if "DENIED" in o.get("text", "") or "READ" in o.get("text", ""))
    assert printed.count("DENIED") == 2 and "READ " not in printed, printed[:500]
    # Without bubblewrap the kernel is the unprivileged uid: it cannot read them either.
    for target in hidden + [next((root / "source" / "course" / ".tito-grade").glob("reference-*.json"))]:
        attempt = subprocess.run(["setpriv", f"--reuid={gradescope.KERNEL_UID}", f"--regid={gradescope.KERNEL_UID}",
                                  "--clear-groups", "cat", str(target)], capture_output=True, text=True)
        assert attempt.returncode != 0 and "Permission denied" in attempt.stderr
    assert (root / "source").stat().st_mode & 0o077 == 0 and (root / "tito-work").stat().st_mode & 0o077 == 0


def test_a_gradescope_submission_without_a_notebook_still_gets_results(autograder, tmp_path):
    results, stdout = run_autograder(autograder, tmp_path / "autograder", None)
    jsonschema.validate(results, SCHEMA)
    assert results["score"] == 0 and {t["status"] for t in results["tests"]} == {"failed"}
    assert results["output"] == f"0 / 60 (missing): no notebook in the submission: expected {NOTEBOOK}"


def test_without_bubblewrap_the_kernel_drops_to_the_unprivileged_uid():
    limits = sandbox.KernelLimits(sandbox=False, unsandboxed_uid=gradescope.KERNEL_UID)
    kernel = launch.kernel_process(limits, launch.unsandboxed_uid(limits), Path("/tmp/runtime"), Path("/tmp/ttk"))
    argv = kernel.argv(Path("/tmp"), Path("/tmp/kernel.json"))
    assert argv[:7] == [shutil.which("setpriv"), f"--reuid={gradescope.KERNEL_UID}",
                        f"--regid={gradescope.KERNEL_UID}", "--clear-groups", "--inh-caps=-all",
                        "--bounding-set=-all", "--no-new-privs"]
    assert argv[7] == shutil.which("prlimit") and any(a.startswith("--nproc=") for a in argv)
    plain = launch.kernel_process(sandbox.KernelLimits(sandbox=False), None, Path("/tmp/runtime"), Path("/tmp/ttk"))
    assert plain.argv(Path("/tmp"), Path("/tmp/kernel.json"))[0] != shutil.which("setpriv")


def test_a_submission_without_the_notebook_gets_a_reason_and_a_links_is_not_followed(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    assert gradescope.pick_submission(folder, NOTEBOOK).problem == f"no notebook in the submission: expected {NOTEBOOK}"
    (folder / NOTEBOOK).symlink_to(sample("reference"))
    assert gradescope.pick_submission(folder, NOTEBOOK).path is None
    (folder / "mine.ipynb").write_text("{}")
    picked = gradescope.pick_submission(folder, NOTEBOOK)
    assert picked.path.name == "mine.ipynb" and "expected the file name" in picked.problem


def test_bad_visibility_in_settings_is_named(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[gradescope]\nhidden_checks = later\n")
    with pytest.raises(ValueError, match="hidden_checks must be one of visible, after_due_date"):
        gradescope.visibility_settings(ini)
