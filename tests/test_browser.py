"""What a student sees in JupyterLab, checked in a real browser: headless Debian Chromium driven by
Playwright, a JupyterLab server on localhost with the released notebook.

1. Run All on the released notebook: the first visible check stops with a NotImplementedError
   whose traceback names the function to fill in.
2. The same file filled in with the reference solution: Run All gives no error, every cell runs.
3. nbgrader's Validate button: its dialog reports failure on the stubs, success once filled in.

Screenshots go to a temporary folder, or to docs/screenshots/ when TINYTORCH_SCREENSHOTS=docs
(`make screenshots`), so an ordinary test run leaves the repository unchanged.
Needs `scripts/setup.sh` (chromium, jupyterlab, playwright).
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from student_notebooks import ROOT, filled_in, released_notebook

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
SCREENSHOTS = DOCS_SCREENSHOTS if os.environ.get("TINYTORCH_SCREENSHOTS") == "docs" else \
    Path(os.environ.get("TMPDIR", "/tmp")) / f"tinytorch-screenshots-{os.getpid()}"
NOTEBOOK = "09_spatial.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SETUP_HINT = "run scripts/setup.sh (it installs chromium, jupyterlab and playwright)"


def _require_browser():
    "Fail, never skip, when the browser tooling is missing: the check would silently vanish otherwise."
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: {SETUP_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
        import jupyterlab  # noqa: F401
    except ImportError as error:
        pytest.fail(f"{error.name} is not installed in {sys.prefix}: {SETUP_HINT}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterLab:
    "A JupyterLab server on 127.0.0.1 over `root`, in its own process group, stopped by the PID we started."

    def __init__(self, root: Path, scratch: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        settings = scratch / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # The "get notified about Jupyter news?" toast would cover the notebook in screenshots.
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(scratch / "lab-settings"),
                   JUPYTER_RUNTIME_DIR=str(scratch / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(scratch / "workspaces"))
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={root}"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self.log = open(scratch / "jupyterlab.log", "w")
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.process.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"JupyterLab did not answer within {seconds} s: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # lets the server shut its kernels down
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # our own group: kernels left behind, if any
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()


def _open_notebook(page, lab: JupyterLab) -> None:
    page.goto(lab.url(f"lab/tree/{NOTEBOOK}"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # The notebook shows before its kernel is connected; wait for the status bar to say Idle.
    # A notebook without kernelspec metadata first asks which kernel to start: pick the
    # default (Python 3), as a student would.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = page.inner_text("#jp-main-statusbar")
        if re.search(r"Python 3 \(ipykernel\) \| Idle", status):
            return
        dialog = page.query_selector(".jp-Dialog:has-text('Select Kernel') .jp-Dialog-button.jp-mod-accept")
        if dialog is not None:
            dialog.click()
        page.wait_for_timeout(250)
    raise AssertionError(f"the kernel did not become idle within 60 s; status bar: {status!r}")


def _run_all(page) -> None:
    page.click(".lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")
    # Finished: no prompt shows `*`, at least one shows a number, and the kernel is idle again.
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')].map(p => p.textContent);
        return prompts.some(p => /\\[\\d+\\]/.test(p)) && !prompts.some(p => p.includes('*'))
            && /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '');
    }""", timeout=120_000, polling=250)


def _cells(page) -> list:
    "For each code cell: (prompt, source, output text)."
    return page.eval_on_selector_all(".jp-Notebook .jp-CodeCell", """cells => cells.map(c => [
        c.querySelector('.jp-InputPrompt')?.textContent || '',
        c.querySelector('.jp-InputArea-editor')?.textContent || '',
        [...c.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent).join('\\n')])""")


def _error_outputs(page) -> list:
    return page.eval_on_selector_all(
        ".jp-Notebook .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "outputs => outputs.map(o => o.textContent)")


def _screenshot(page, element, name: str) -> None:
    element.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # let the notebook finish re-rendering the scrolled cells
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def _validate(page, screenshot: str) -> tuple:
    "Press nbgrader's Validate button; (classes, text) of its result dialog, which is also screenshot."
    page.click(".validate-button")
    message = page.wait_for_selector("#validation-message", timeout=120_000)
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / screenshot))
    return message.get_attribute("class") or "", message.inner_text()


def test_student_in_jupyterlab(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright
    released = released_notebook()
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(released, work / NOTEBOOK)
    filled = filled_in(released, tmp_path / "filled.ipynb")

    lab = JupyterLab(work, tmp_path)
    try:
        lab.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})

                # 1. The released notebook: the student sees which function to write.
                _open_notebook(page, lab)
                _run_all(page)
                errors = _error_outputs(page)
                assert len(errors) == 1, f"Run All should stop at the first unfilled function, got {len(errors)} errors"
                assert "NotImplementedError" in errors[0], errors[0][:2000]
                assert re.search(r"Cell In\s*\[\d+\], line \d+, in conv2d_loops", errors[0]), (
                    "the traceback should point at the cell to fill (conv2d_loops):\n" + errors[0][:2000])
                assert "raise NotImplementedError()" in errors[0], errors[0][:2000]
                failing = [cell for cell in _cells(page) if "NotImplementedError" in cell[2]]
                assert len(failing) == 1 and "conv2d_loops(" in failing[0][1], \
                    "the error should be shown under the first visible check of conv2d_loops"
                _screenshot(page, page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").first,
                            "student-stub.png")
                # Validating too early: nbgrader's dialog says the checks fail.
                classes, text = _validate(page, "validate-stub.png")
                assert "validation-failed" in classes, f"Validate should fail on the stubs ({classes}):\n{text[:2000]}"
                assert "NotImplementedError" in text, text[:2000]
                page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")

                # 2. The filled-in notebook: every cell runs, no error.
                page.goto("about:blank")  # so no save from the page overwrites the new file
                shutil.copyfile(filled, work / NOTEBOOK)
                _open_notebook(page, lab)
                _run_all(page)
                assert _error_outputs(page) == [], "the filled-in notebook shows errors:\n" + "\n".join(_error_outputs(page))[:3000]
                cells = _cells(page)
                unrun = [source.splitlines()[0] if source else "" for prompt, source, _ in cells
                         if source.strip() and not re.search(r"\[\d+\]", prompt)]
                assert not unrun, f"cells not run: {unrun[:5]}"
                # The student's convolution at work: the feature map of a real digit, under its cell.
                digit_cell = page.locator(".jp-CodeCell").filter(has_text="load_digits").first
                assert digit_cell.locator(".jp-OutputArea-output img").count() == 1, "the feature-map plot is missing"
                _screenshot(page, digit_cell, "student-solved.png")

                # 3. nbgrader's Validate button (it saves first, then validates in a fresh kernel).
                classes, text = _validate(page, "validate.png")
                assert "validation-success" in classes, f"nbgrader's Validate failed ({classes}):\n{text[:2000]}"
                assert "Success" in text, text[:2000]
            finally:
                browser.close()
    finally:
        lab.stop()
    assert lab.process.returncode is not None
