"""Feedback a student may read: the executed notebook with hidden tests and mark schemes
cleared, every graded cell followed by its score and the concepts it missed, and nothing that
quotes hidden code (no tracebacks, no record lines, no line of a hidden test or solution that
is not the student's own)."""
import copy
import functools
import html
import re
import threading

import nbformat

from tito.grading.notebooks import (HIDDEN, MARK_SCHEME, MARKER_WORDS, cell_text, grade_id, is_graded,
                                    is_restored, neutralise_markers, strip_ansi, strip_region)
from tinytorch.record import MARKER

TAG = re.compile(r"<[^>]*>")
# Output types shown as-is; html/javascript from a student's kernel is dropped.
SAFE_MIMES = ("text/plain", "image/png", "image/jpeg")
_exporter = threading.local()


def _forbidden(secrets: dict, submission_text: str) -> list:
    """Secret lines the student did not write themselves: their own text never counts as a leak,
    even a solution line they wrote with a comment after it (it is in their text, not a line of it)."""
    return sorted({line for lines in secrets.values() for line in lines if line not in submission_text},
                  key=len, reverse=True)


def _clean_text(text: str, forbidden: list) -> str:
    kept = []
    for line in strip_ansi(text).splitlines(keepends=True):
        if MARKER in line or any(secret in line for secret in forbidden):
            continue
        kept.append(neutralise_markers(line))
    return "".join(kept)


def _clean_outputs(cell, forbidden: list) -> list:
    outputs = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
            text = _clean_text("".join(text) if isinstance(text, list) else str(text), forbidden)
            if text:
                outputs.append(nbformat.v4.new_output("stream", name=output.get("name", "stdout"), text=text))
        elif kind == "error":
            # A traceback quotes the cell's code, hidden part included: show only what was raised.
            summary = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
            text = _clean_text(summary, forbidden)
            outputs.append(nbformat.v4.new_output("stream", name="stderr", text=text or "error (message hidden)\n"))
        elif kind in ("display_data", "execute_result"):
            data = {}
            for mime in SAFE_MIMES:
                if mime in output.get("data", {}):
                    value = output["data"][mime]
                    if mime == "text/plain":
                        value = _clean_text("".join(value) if isinstance(value, list) else str(value), forbidden)
                    elif not isinstance(value, str) or not BASE64.fullmatch(value):
                        continue   # an image is base64 text, nothing else
                    data[mime] = value
            if data:
                outputs.append(nbformat.v4.new_output("display_data", data=data))
    return outputs


def _check_lines(checks, forbidden: list) -> list:
    "One line per check of a cell: ✓ or ✗, its points and, on ✗, its concept."
    lines = []
    for result in checks:
        mark = "✓" if result.passed else "✗"
        more = f" (+{len(result.records) - 1} like it)" if len(result.records) > 1 else ""
        line = f"- {mark} `{result.records[0]}`{more} {result.earned:.3g}\u00a0/\u00a0{result.points:.3g}"
        if not result.passed:
            why = result.concept + (f" ({result.how})" if result.how else
                                    " (nothing recorded: an error stopped this check or the code before it)"
                                    if result.missing else "")
            line += ": " + _clean_text(html.escape(why), forbidden).strip()
        lines.append(line)
    return lines


def feedback_notebook(executed, submission_text: str, secrets: dict, points: dict, messages: dict, graded: list,
                      header: str, checks: dict | None = None):
    """The notebook a student is shown. `checks`: {grade_id: [CheckResult]} to list every check of a
    graded cell under it (scoring.grade_cells)."""
    forbidden = _forbidden(secrets, submission_text)
    max_points = dict(graded)
    cells = [nbformat.v4.new_markdown_cell(header + "\n\n" + _score_table(points, messages, graded, forbidden))]
    for cell in executed.cells:
        shown = copy.deepcopy(cell)
        text = cell_text(cell)
        if is_restored(cell):
            text = strip_region(text, *HIDDEN)
        else:
            text = neutralise_markers(text)
        if cell.cell_type == "markdown":
            text = strip_region(text, *MARK_SCHEME)
        shown.source = text
        shown.metadata = {}
        if shown.cell_type == "code":
            shown.outputs = _clean_outputs(cell, forbidden)
        cells.append(shown)
        gid = grade_id(cell)
        if is_graded(cell) and gid in max_points:
            verdict = f"**{gid}: {round(points.get(gid, 0), 2):g} / {max_points[gid]:g} points**"
            reasons = messages.get(gid, [])
            if checks and checks.get(gid):
                errors = [r for r in reasons if not any(r.startswith(c.concept) for c in checks[gid])]
                verdict += "\n\n" + "\n".join(_check_lines(checks[gid], forbidden) + [
                    f"- {_clean_text(html.escape(r), forbidden).strip()}" for r in errors])
            elif reasons:
                verdict += "\n\n" + "\n".join(f"- {_clean_text(html.escape(r), forbidden).strip()}" for r in reasons)
            cells.append(nbformat.v4.new_markdown_cell(verdict))
        elif is_graded(cell) and cell.cell_type == "markdown" and gid:
            written = float(cell.metadata.get("nbgrader", {}).get("points", 0))
            cells.append(nbformat.v4.new_markdown_cell(
                f"**{gid}: a written answer ({written:g} points), graded by hand** — its score reaches the "
                f"course's grades once a person has marked it."))
    for index, cell in enumerate(cells):
        cell["id"] = f"feedback-{index}"
    language = {"language_info": {"name": "python"}}
    return nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": language, "cells": cells})


# What a page may hold of the HTML that markdown and highlighted code become: everything else a
# student wrote (<script>, <iframe srcdoc>, <svg>, <details ontoggle>, on* handlers, javascript:
# links, <style>) is shown as inert text or dropped, by bleach (a well-kept html5lib-based
# sanitiser); the page's Content-Security-Policy forbids every script besides.
PAGE_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
             "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
             "th", "thead", "tr", "ul"}
PAGE_PROTOCOLS = {"http", "https", "mailto", "data"}
CSP = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
       "base-uri 'none'; form-action 'none'; frame-src 'none'; object-src 'none'")
_cleaner = threading.local()
TEMPLATE_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.I | re.S)
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name in ("class", "id", "title"):
        return True
    if tag == "a" and name == "href":
        return not value.strip().lower().startswith("data:")
    if tag == "img" and name == "src":
        return bool(re.match(r"\s*data:image/(png|jpeg|gif);base64,", value, re.I))
    if tag == "img" and name in ("alt", "width", "height"):
        return True
    return tag in ("th", "td") and name == "style"


def sanitise(text: str) -> str:
    "HTML of a student's markdown or code, made inert (bleach; one cleaner per thread)."
    if getattr(_cleaner, "value", None) is None:
        import bleach
        from bleach.css_sanitizer import CSSSanitizer
        _cleaner.value = bleach.Cleaner(tags=PAGE_TAGS, attributes=_allowed_attribute, protocols=PAGE_PROTOCOLS,
                                        css_sanitizer=CSSSanitizer(allowed_css_properties=["text-align"]))
    return _cleaner.value.clean(text)


@functools.lru_cache(maxsize=8192)
def _sanitised(text: str) -> str:
    return sanitise(text)


@functools.lru_cache(maxsize=8192)
def _highlighted(source: str, language: str) -> str:
    from nbconvert.filters.highlight import Highlight2HTML
    return Highlight2HTML(pygments_lexer="ipython3")(source, language)


def _score_table(points: dict, messages: dict, graded: list, forbidden: list) -> str:
    "Markdown: one row per graded cell (points, and the first thing to look at), above the notebook."
    rows = ["| check | points | what to look at |", "| :--- | ---: | :--- |"]
    for gid, max_points in graded:
        reasons = messages.get(gid, [])
        hint = _clean_text(html.escape(reasons[0]), forbidden).strip() if reasons else ""
        if len(reasons) > 1:
            hint += f" (and {len(reasons) - 1} more, under the cell)"
        rows.append(f"| {gid} | {round(points.get(gid, 0), 2):g}\u00a0/\u00a0{max_points:g} | {hint.replace('|', '&#124;')} |")
    return "\n".join(rows)


def _make_exporter():
    """nbconvert's classic HTML exporter, made cheaper for a class of near-identical pages: the
    module's own cells repeat on every page, so bleach sanitising and pygments highlighting are
    cached by input, once for all grading threads (a student's own cells are still sanitised and
    highlighted, once), and HTMLExporter's final BeautifulSoup pass (image alt texts and tab
    stops, ~0.7 s a page here) is skipped. A page of this module took ~1.6 s uncached, ~0.3 s
    with sanitising cached per thread, and takes ~0.04 s now (measured in one run)."""
    from nbconvert import HTMLExporter, TemplateExporter
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class FeedbackExporter(HTMLExporter):
        def from_notebook_node(self, nb, resources=None, **kw):
            resources = self._init_resources(resources)
            self.register_filter("highlight_code",
                                 lambda source, language=None, metadata=None: _highlighted(source, language or ""))
            self.register_filter("filter_data_type", WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources))
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    # sanitize_html: markdown, raw cells and rich outputs all go through the clean_html filter below.
    # optimistic_validation: the page's notebook is validated once, after all preprocessors, instead
    # of after each of the twelve (~25 ms a page).
    exporter = FeedbackExporter(template_name="classic", sanitize_html=True, optimistic_validation=True)
    exporter.register_filter("clean_html", lambda html: _sanitised(str(html)))
    return exporter


def to_html(nb, title: str = "Feedback") -> str:
    "The page of `nb`, titled `title` (which the template escapes)."
    if getattr(_exporter, "value", None) is None:
        _exporter.value = _make_exporter()
    body, _ = _exporter.value.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return inert_page(body)


def inert_page(body: str) -> str:
    """The page without the template's scripts (jQuery, require.js, MathJax, mermaid: a feedback
    page needs none) and with a Content-Security-Policy first in its head, so that no script
    runs, whatever got in. Every <script> left is the template's: what students wrote was sanitised."""
    body = TEMPLATE_SCRIPT.sub("", body)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    head = re.search(r"<head[^>]*>", body, re.I)
    if head is None:
        raise ValueError("a feedback page without <head>: the exporter's template changed")
    return body[:head.end()] + "\n" + meta + body[head.end():]


# The template's own <style> (~265 KB of CSS on every page) holds nothing a student wrote (their
# text is escaped or sanitised before it reaches the page), so the leak scan need not read it.
STYLE = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.S | re.I)


def html_text(body: str) -> str:
    "The visible text of an HTML page (what a leak would look like to a reader)."
    return html.unescape(TAG.sub("", STYLE.sub("", body)))


def find_leaks(body: str, secrets: dict, submission_text: str) -> list:
    "Descriptions of the secret text in a feedback page: marker words, or secret lines not the student's."
    text = html_text(body)
    leaks = [f"marker '{word}'" for word in MARKER_WORDS if word in text]
    for kind, lines in secrets.items():
        for line in lines:
            if line in text and line not in submission_text:
                leaks.append(f"{kind} line '{line[:60]}'")
    return leaks
