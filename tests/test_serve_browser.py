"""`tito serve` in a real browser (headless Debian Chromium, Playwright), on loopback: a student
signs in with their token, uploads the reference notebook and watches it go to full marks, then
uploads a buggy one and sees the concept it breaks named, on the attempt page and in the
feedback page; the instructor sees both attempts' student in the class table.

Screenshots go to a temporary folder, or to docs/screenshots/ with TINYTORCH_SCREENSHOTS=docs
(`make screenshots`), as in tests/test_browser.py."""
import pytest

from serve_helpers import EXPECTED, SAMPLES, ServeProcess, new_course
from test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _require_browser
from tito.serve.store import Store

BUGGY = "bug_max_init_zero"


def _upload(page, server, notebook) -> str:
    "Upload from the student page; the text of the attempt page once graded."
    page.goto(f"{server.url}/student")
    page.set_input_files("#notebook", str(notebook))
    page.click("button:has-text('Upload and grade')")
    page.wait_for_url(f"{server.url}/attempts/*")
    page.wait_for_selector("#score", timeout=240_000)   # the page refreshes itself until graded
    page.wait_for_load_state("load")
    return page.inner_text("main")


@pytest.mark.slow
def test_student_uploads_and_reads_feedback_in_the_browser(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright
    course = new_course(tmp_path / "course")
    store = Store(course)
    student, instructor = store.issue_token("alice"), store.issue_token("prof", role="instructor")
    server = ServeProcess(course, tmp_path / "serve.log", "--min-gap-seconds", "0").wait_ready()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(server.url)
                page.fill("#token", student)
                page.click("button:has-text('Sign in')")
                page.wait_for_url(f"{server.url}/student")
                assert "Hand in 09_spatial" in page.inner_text("h1")

                text = _upload(page, server, SAMPLES / "reference" / "09_spatial" / "09_spatial.ipynb")
                assert "Score: 60 / 66 (graded)" in text, text
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "serve-student.png"))

                text = _upload(page, server, SAMPLES / BUGGY / "09_spatial" / "09_spatial.ipynb")
                score, _, detail = EXPECTED[BUGGY]
                assert f"Score: {score:g} / 66 (graded)" in text and detail in text, text
                assert "[max_pool2d_loops" in text
                frame = page.frame_locator("iframe.feedback")
                frame.locator("text=Feedback: 09_spatial, alice").first.wait_for(timeout=30_000)
                assert "-np.inf" in frame.locator("body").inner_text()
                page.locator("#detail").scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "serve-feedback.png"))

                page.goto(f"{server.url}/student")
                rows = page.locator("table.attempts tbody tr").all_inner_texts()
                assert len(rows) == 2 and f"{score:g} / 66" in rows[0] and "60 / 66" in rows[1], rows

                page.click("button:has-text('Sign out')")
                page.fill("#token", instructor)
                page.click("button:has-text('Sign in')")
                page.wait_for_url(f"{server.url}/instructor")
                table = page.inner_text("table.attempts")
                assert "alice" in table and f"{score:g} / 66" in table, table
                page.screenshot(path=str(SCREENSHOTS / "serve-instructor.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.stop()
