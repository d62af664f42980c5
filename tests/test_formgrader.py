"""Written answers graded by a person, in a real browser: `tito grade` leaves them for nbgrader's
formgrader (which opens the same course folder and gradebook.db); a score typed there reaches
grades.csv on the next `tito grade`, which reuses every autograded result (no kernel runs).

Headless Debian Chromium driven by Playwright, JupyterLab with nbgrader's formgrader extension on
127.0.0.1. Needs `scripts/setup.sh` (chromium, jupyterlab, playwright)."""
import csv
import json
import shutil
import time
import urllib.request

from test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, JupyterLab, _require_browser

from student_notebooks import ROOT
from tito.grading.batch import grade_batch
from tito.grading.course import limits_for
from tito.settings import load_settings

SAMPLES = ROOT / "tests" / "submissions" / "submitted"
FAST = dict(cell_timeout=30, submission_timeout=120, memory_mb=2048)
QUESTION = "written_batchnorm_eval"


def rows(course) -> dict:
    with open(course / "grades.csv", newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def api(lab: JupyterLab, path: str, **query):
    url = lab.url(f"formgrader/api/{path}") + "".join(f"&{key}={value}" for key, value in query.items())
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_a_score_typed_in_formgrader_reaches_grades_csv(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright
    submitted = tmp_path / "submitted"
    for student in ("reference", "untouched_release"):
        shutil.copytree(SAMPLES / student, submitted / student)
    course = tmp_path / "course"
    settings = load_settings(ROOT)
    limits = limits_for(settings, sandbox=True, **FAST)
    first = grade_batch(submitted, ROOT, course, settings, limits, jobs=2, progress=False, deadline=None)
    before = rows(course)
    assert before["reference"]["needs_manual"] == "6" and before["reference"]["manual_score"] == "0"
    assert before["reference"]["raw_score"] == "60" and before["reference"]["detail"] == ""
    # an answer left as released is nbgrader's "No response": 0 points, nothing for a person to read
    assert before["untouched_release"]["needs_manual"] == "0"
    assert first.graded_now == 2

    lab = JupyterLab(course, tmp_path)
    try:
        lab.wait_ready()
        notebooks = api(lab, "submitted_notebooks/09_spatial/09_spatial")
        reference = next(n for n in notebooks if n["student"] == "reference")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            # formgrader's own requests carry no token: give every request of this page the header
            page = browser.new_page(viewport={"width": 1280, "height": 1400},
                                    extra_http_headers={"Authorization": f"token {lab.token}"})
            page.goto(lab.url(f"formgrader/submissions/{reference['id']}/"))
            answer = page.locator(".nbgrader_cell", has_text="running averages are the training")
            answer.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")   # the grades are fetched, the inputs bound to them
            score = answer.locator("input.score")
            score.fill("1.5")
            score.press("Tab")                         # formgrader saves on change
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:   # the save is an HTTP request; the gradebook has it once it answers
                grades = api(lab, "grades", submission_id=reference["id"])
                if any(g["name"] == QUESTION and g["manual_score"] == 1.5 for g in grades):
                    break
                page.wait_for_timeout(300)
            else:
                raise AssertionError(f"formgrader never saved the score: {grades}")
            answer.scroll_into_view_if_needed()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "formgrader-written-answer.png"))
            browser.close()
    finally:
        lab.stop()

    again = grade_batch(submitted, ROOT, course, settings, limits, jobs=2, progress=False, deadline=None)
    assert again.graded_now == 0 and again.reused == 2        # merged without running a kernel
    after = rows(course)
    assert after["reference"]["manual_score"] == "1.5" and after["reference"]["needs_manual"] == "4"
    assert after["reference"]["raw_score"] == "61.5" and after["reference"]["score"] == "61.5"
    assert after["untouched_release"] == before["untouched_release"]
