"""Notebook surgery the grader needs, in plain Python (no nbgrader import, so workers stay light).

- which cells nbgrader grades or locks (`nbgrader` cell metadata),
- restoring the instructor's locked and graded cells into a submission (nbgrader's
  `OverwriteCells` + `add_missing_cells`, plus what nbgrader does not do: duplicated and
  foreign grade ids are neutralised and reported instead of aborting the batch),
- the secret text of a source notebook (solutions, hidden tests, mark schemes) for leak scans,
- clearing hidden tests and mark schemes for feedback.
"""
import ast
import copy
import hashlib
import json
import re

import nbformat

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARK_SCHEME = ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ===")
# The words a leak scan looks for; a student who types them gets them neutralised in feedback.
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
                "BEGIN MARK SCHEME", "END MARK SCHEME")
DEMO_TAG = "demo"
# Shorter secret lines ("pass", "return out") are too common to prove a leak.
MIN_SECRET_LINE = 12
# Shapes a submission may have (settings.ini [grading] max_cells, max_nesting override them).
MAX_CELLS = 2000
MAX_NESTING = 64


class InvalidNotebook(ValueError):
    "The submission is not a readable Jupyter notebook."


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id(cell):
    value = nbgrader_meta(cell).get("grade_id")
    return value if isinstance(value, str) else None


def is_graded(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade"))


def is_solution(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_locked(cell) -> bool:
    meta = nbgrader_meta(cell)
    # nbgrader locks every graded non-solution cell even when `locked` is false.
    return bool(meta.get("locked")) or (bool(meta.get("grade")) and not meta.get("solution"))


def is_restored(cell) -> bool:
    "A cell whose instructor version replaces the student's: locked or graded, and not a solution."
    return is_locked(cell) and not is_solution(cell)


def is_demo(cell) -> bool:
    "A demonstration cell: tagged `demo` in the instructor's notebook (plots, measurements; grades nothing)."
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.get("cell_type") == "code" and isinstance(tags, list) and DEMO_TAG in tags


def demo_cells(nb, source) -> list:
    """Indices of the code cells of `nb` whose text is, unchanged, one of `source`'s demo cells.

    The grader does not run them. The decision rests on the instructor's text only: a student's
    tag counts for nothing, and an edited demo cell is the student's own code, which runs."""
    texts = {cell_text(c).strip() for c in source.cells if is_demo(c)}
    return [i for i, c in enumerate(nb.cells)
            if c.get("cell_type") == "code" and cell_text(c).strip() in texts and cell_text(c).strip()]


def graded_cells(nb) -> list:
    "[(grade_id, points)] of the graded code cells, in notebook order."
    return [(grade_id(c), float(nbgrader_meta(c).get("points", 0)))
            for c in nb.cells if is_graded(c) and c.cell_type == "code" and grade_id(c)]


def manual_cells(nb) -> list:
    "[(grade_id, points)] of the written answers a person grades (nbgrader's manually graded markdown cells)."
    return [(grade_id(c), float(nbgrader_meta(c).get("points", 0)))
            for c in nb.cells if is_graded(c) and is_solution(c) and c.cell_type == "markdown" and grade_id(c)]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")   # terminal colours in a traceback or a test runner's output


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def cell_text(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def json_depth(value) -> int:
    "How deeply lists and objects nest in `value` (a scalar is 0), walked without recursion."
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(data: bytes, max_cells: int = MAX_CELLS, max_nesting: int = MAX_NESTING) -> dict:
    """The notebook JSON in `data` (UTF-8, a byte-order mark allowed, as some editors save it),
    checked against the shapes a grader handles: at most `max_cells` cells, lists and objects
    nested at most `max_nesting` deep. InvalidNotebook says why not."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise InvalidNotebook(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InvalidNotebook(f"not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise InvalidNotebook(f"its JSON nests lists or objects far deeper than the {max_nesting} levels a "
                              "notebook may have") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise InvalidNotebook("JSON but not a notebook: expected an object with a 'cells' list")
    if len(raw["cells"]) > max_cells:
        raise InvalidNotebook(f"it has {len(raw['cells']):,} cells, more than the {max_cells:,} a notebook may have: "
                              "delete the empty and scratch cells, save and submit again")
    depth = json_depth(raw)
    if depth > max_nesting:
        raise InvalidNotebook(f"its JSON nests lists or objects {depth:,} levels deep, more than the "
                              f"{max_nesting} a notebook may have")
    return raw


def read_submission(data: bytes, max_cells: int = MAX_CELLS, max_nesting: int = MAX_NESTING):
    "The notebook in `data`, or InvalidNotebook saying why not (never another exception)."
    raw = parse_json(data, max_cells, max_nesting)
    if raw.get("nbformat") != 4:
        raise InvalidNotebook(f"expected notebook format 4, got {raw.get('nbformat')!r}")
    try:
        nb = nbformat.from_dict(raw)
        for cell in nb.cells:
            if not isinstance(cell, dict):
                raise InvalidNotebook("a cell is not a JSON object")
            if cell.get("cell_type") not in ("code", "markdown", "raw"):
                raise InvalidNotebook(f"unknown cell type {cell.get('cell_type')!r}")
            cell.setdefault("metadata", nbformat.from_dict({}))
            source = cell.get("source", "")
            if isinstance(source, list):
                if not all(isinstance(part, str) for part in source):
                    raise InvalidNotebook("a cell's source holds something other than text")
                cell["source"] = "".join(source)
            elif not isinstance(source, str):
                raise InvalidNotebook("a cell's source is not text")
            if cell["cell_type"] == "code":
                cell["outputs"] = []
                cell["execution_count"] = None
    except InvalidNotebook:
        raise
    except Exception as error:  # nbformat raises assorted errors on odd structures
        raise InvalidNotebook(f"not a valid notebook ({type(error).__name__}: {error})") from None
    return nb


def _fresh_cell(source_cell):
    cell = copy.deepcopy(source_cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    return cell


def restore_cells(submission, source, release=None):
    """The notebook to execute: the student's cells, with every locked/graded cell of `source`
    put back (edited ones overwritten, deleted ones inserted where they belong). Returns
    (notebook, flags); `flags` are short sentences for the `detail` column. `release` (the
    student version) tells an edited test cell from an untouched one."""
    flags = []
    source_by_id = {grade_id(c): c for c in source.cells if grade_id(c)}
    release_by_id = {grade_id(c): c for c in (release or source).cells if grade_id(c)}
    seen, duplicated, foreign, edited = set(), [], [], []
    out_cells = []
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid is None:
            if nbgrader_meta(cell):
                cell.metadata.pop("nbgrader", None)
            out_cells.append(cell)
            continue
        if gid not in source_by_id:
            foreign.append(gid)
            cell.metadata.pop("nbgrader", None)
            out_cells.append(cell)
            continue
        if gid in seen:
            duplicated.append(gid)
            # The copy keeps the student's text but loses its grading role.
            cell.metadata.pop("nbgrader", None)
            out_cells.append(cell)
            continue
        seen.add(gid)
        reference = source_by_id[gid]
        if is_restored(reference):
            visible = release_by_id.get(gid, reference)
            if cell_text(cell).strip() != cell_text(visible).strip():
                edited.append(gid)
            out_cells.append(_fresh_cell(reference))
        else:
            cell.cell_type = reference.cell_type
            cell.metadata["nbgrader"] = copy.deepcopy(reference.metadata["nbgrader"])
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
            else:
                cell.pop("outputs", None)
                cell.pop("execution_count", None)
            out_cells.append(cell)
    missing = [gid for gid in source_by_id if gid not in seen]
    for gid in missing:
        reference = source_by_id[gid]
        if is_restored(reference) and is_graded(reference):
            # A test cell sees every cell the intact notebook's would have seen.
            cell, position = _fresh_cell(reference), latest_position(out_cells, source, gid)
        elif is_restored(reference):
            # A locked cell (imports, given code) goes where it stood, before the student's cells.
            cell, position = _fresh_cell(reference), earliest_position(out_cells, source, gid)
        else:
            # A deleted answer comes back as the student version (the stub), never the solution;
            # early, so that the student's own later cells still define what they define.
            cell, position = _fresh_cell(_stub(gid, reference, release)), earliest_position(out_cells, source, gid)
        out_cells.insert(position, cell)
    deleted_tests = [gid for gid in missing if is_restored(source_by_id[gid]) and is_graded(source_by_id[gid])]
    deleted_locked = [gid for gid in missing if is_restored(source_by_id[gid]) and not is_graded(source_by_id[gid])]
    deleted_answers = [gid for gid in missing if not is_restored(source_by_id[gid])]
    if edited:
        flags.append("edited test cells restored: " + ", ".join(edited))
    if deleted_tests:
        flags.append("deleted test cells restored: " + ", ".join(deleted_tests))
    if deleted_locked:
        flags.append("deleted locked cells restored: " + ", ".join(deleted_locked))
    if deleted_answers:
        flags.append("deleted answer cells put back as stubs: " + ", ".join(deleted_answers))
    if duplicated:
        flags.append("duplicated grade ids ignored: " + ", ".join(sorted(set(duplicated))))
    if foreign:
        flags.append("unknown grade ids ignored: " + ", ".join(sorted(set(foreign))))
    result = nbformat.from_dict({"nbformat": 4, "nbformat_minor": source.get("nbformat_minor", 5),
                                 "metadata": copy.deepcopy(source.metadata), "cells": out_cells})
    _unique_cell_ids(result)
    return result, flags


def _source_order(source) -> dict:
    return {gid: index for index, gid in enumerate(grade_id(c) for c in source.cells) if gid is not None}


def _placed(out_cells, order: dict) -> list:
    "(position in out_cells, position in source) of the cells that have a source grade id."
    return [(i, order[grade_id(c)]) for i, c in enumerate(out_cells) if grade_id(c) in order]


def earliest_position(out_cells, source, gid) -> int:
    "Right after the last cell that comes before `gid` in the source (the start if none does)."
    order = _source_order(source)
    earlier = [i for i, s in _placed(out_cells, order) if s < order[gid]]
    return max(earlier) + 1 if earlier else 0


def latest_position(out_cells, source, gid) -> int:
    """As late as the intact notebook allows: after every cell that comes before `gid` in the
    source and every student cell after those, up to the next cell that comes after it in the
    source (the end if none does). A restored test so sees all the intact one would have seen."""
    order = _source_order(source)
    start = earliest_position(out_cells, source, gid)
    later = [i for i, s in _placed(out_cells, order) if s > order[gid] and i >= start]
    return min(later) if later else len(out_cells)


def _stub(gid, reference, release):
    "The student version of answer cell `gid`: the release's cell, or the source's with the solution cut."
    for cell in (release.cells if release is not None else []):
        if grade_id(cell) == gid:
            return cell
    stub = copy.deepcopy(reference)
    stub.source = strip_region(cell_text(reference), *SOLUTION)
    return stub


def _unique_cell_ids(nb) -> None:
    "nbformat 4.5 cell ids must be unique; students' copy-pasted cells may repeat them."
    used = set()
    for index, cell in enumerate(nb.cells):
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", cell_id) or cell_id in used:
            cell_id = f"cell-{index}"
            while cell_id in used:
                cell_id += "x"
            cell["id"] = cell_id
        used.add(cell_id)


def region_spans(lines: list, begin: str, end: str) -> list:
    """(first, last) line indices of each region of `lines` between the markers `begin` and `end`
    (markers excluded, `last` exclusive); a region left open runs to the last line, as `_regions`
    reads it."""
    spans, start = [], None
    for index, line in enumerate(lines):
        if start is None and begin in line:
            start = index + 1
        elif start is not None and end in line:
            spans.append((start, index))
            start = None
    if start is not None:
        spans.append((start, len(lines)))
    return spans


def _regions(text: str, begin: str, end: str):
    "(inside_lines, outside_lines) of `text` for the region markers begin/end."
    inside, outside, active = [], [], False
    for line in text.splitlines():
        if begin in line:
            active = True
            continue
        if end in line:
            active = False
            continue
        (inside if active else outside).append(line)
    return inside, outside


def strip_region(text: str, begin: str, end: str) -> str:
    "`text` without the lines from `begin` to `end` (markers included)."
    return "\n".join(_regions(text, begin, end)[1])


def secret_lines(source) -> dict:
    """{"solution": set, "hidden": set, "mark scheme": set} of stripped secret lines of
    `source` that appear nowhere outside a secret region and are long enough to prove a leak."""
    public, secret = set(), {"solution": set(), "hidden": set(), "mark scheme": set()}
    for cell in source.cells:
        text = cell_text(cell)
        rest = text
        for kind, (begin, end) in (("solution", SOLUTION), ("hidden", HIDDEN), ("mark scheme", MARK_SCHEME)):
            inside, outside = _regions(rest, begin, end)
            secret[kind].update(line.strip() for line in inside)
            rest = "\n".join(outside)
        public.update(line.strip() for line in rest.splitlines())
    for kind in secret:
        secret[kind] = {line for line in secret[kind]
                        if len(line) >= MIN_SECRET_LINE and line not in public and re.search(r"\w", line)}
    return secret


def neutralise_markers(text: str) -> str:
    "A student's text with the marker words broken by a zero-width space, so scans and nbgrader ignore them."
    for word in MARKER_WORDS:
        first, rest = word.split(" ", 1)
        text = text.replace(word, f"{first}\u200b {rest}")
    return text


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hash(path) -> str:
    "content_hash of a file's bytes, read in pieces (a submission may be far too large to hold)."
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------- hidden reference helpers (tito export)

# A line `### HIDDEN HELPER _name ...` in a hidden part of nbs/ stands for the one definition of
# `_name` (a top-level def in an earlier hidden part); source/ gets that definition in its place.
HELPER_LINE = re.compile(r"^(\s*)### HIDDEN HELPER (\w+)\b")


class HelperError(ValueError):
    "A `### HIDDEN HELPER` line that cannot be expanded (the message names the notebook, cell and helper)."


def _helper_definitions(cells: list, where: str) -> dict:
    "{name: [(cell index, def lines), ...]} of the top-level functions defined in the hidden parts of graded cells."
    found = {}
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or not is_graded(cell):
            continue
        lines = cell_text(cell).splitlines()
        for first, last in region_spans(lines, *HIDDEN):
            try:
                tree = ast.parse("\n".join(lines[first:last]))
            except SyntaxError as error:
                raise HelperError(f"{where}: the hidden part of {grade_id(cell)} does not parse ({error.msg}, "
                                  f"line {error.lineno})") from None
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                    found.setdefault(node.name, []).append((index, lines[first + start:first + node.end_lineno]))
    return found


def expand_hidden_helpers(nb: dict, where: str = "the notebook") -> dict:
    """`nb` (notebook JSON) with each `### HIDDEN HELPER _name` line of a hidden part replaced by the
    one definition of `_name`: so every graded cell of source/ defines what its hidden part calls, and
    still grades alone (deleted and restored, reordered, or re-run in a new kernel after a crash),
    while nbs/ holds each reference helper once. HelperError for a line outside a hidden part, a
    helper defined in no hidden part or in several, or defined only after a cell that uses it."""
    cells = nb.get("cells", [])
    if not any(HELPER_LINE.match(line) for cell in cells for line in cell_text(cell).splitlines()):
        return nb
    definitions = _helper_definitions(cells, where)
    out = []
    for index, cell in enumerate(cells):
        text = cell_text(cell)
        lines = text.splitlines()
        inside = {i for first, last in region_spans(lines, *HIDDEN) for i in range(first, last)}
        expanded = []
        for number, line in enumerate(lines):
            match = HELPER_LINE.match(line)
            if not match:
                expanded.append(line)
                continue
            name, cell_name = match[2], grade_id(cell) or f"code cell {index}"
            if match[1]:
                raise HelperError(f"{where}: {cell_name} line {number + 1}: `### HIDDEN HELPER {name}` must start "
                                  "its line (the definition it stands for is top-level code)")
            if number not in inside or not is_graded(cell):
                raise HelperError(f"{where}: {cell_name} line {number + 1}: `### HIDDEN HELPER {name}` must stand "
                                  "inside the hidden tests of a graded cell (the helper is a reference, never released)")
            places = definitions.get(name, [])
            if len(places) != 1:
                raise HelperError(f"{where}: {cell_name} asks for hidden helper {name}, which must be defined once "
                                  f"(a top-level def in a hidden part); found {len(places)} definitions")
            (home, definition), = places
            if home >= index:
                raise HelperError(f"{where}: {cell_name} asks for hidden helper {name}, whose definition (in "
                                  f"{grade_id(cells[home])}) must stand in an earlier cell, the first that uses it")
            expanded.extend(definition)
        if expanded != lines:
            source = [line + "\n" for line in expanded]
            source[-1] = source[-1] if text.endswith("\n") else source[-1][:-1]
            cell = dict(cell, source=source)
        out.append(cell)
    return dict(nb, cells=out)
