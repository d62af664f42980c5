"""Feedback that names the misconception: a library of the wrong loops students really write.

Each misconception of `misconceptions/<module>.json` (in the course folder) is a small edit of
the reference solution — the running max started at 0, the bias added per kernel position,
momentum swapped — with the words that explain it:

    {"id": "max_init_zero", "function": "max_pool2d_loops",
     "edits": [["best = -np.inf", "best = 0.0"]],
     "explanation": "the running max starts at 0: ..."}

The grader runs every variant through the graded cells once per source (in its own process, as
the mutation harness does: it is the instructor's code) and keeps the records each prints. A
student's check whose records are wrong exactly as a variant's are is named by that variant's
explanation, in `detail` and on the feedback page. The student's process decides nothing here
either: the comparison is the grader's own (scoring.record_matches).
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tinytorch.record import decode_records, encode_record
from tito.grading.intake import atomic_write
from tito.grading.scoring import record_matches

FOLDER = "misconceptions"


class MisconceptionError(ValueError):
    "The course's misconception library cannot be read or no longer applies to the source."


@dataclass(frozen=True)
class Misconception:
    id: str
    function: str
    edits: tuple            # ((old, new), ...) applied in order to the cell that defines `function`
    explanation: str


def library_path(course: Path, module: str) -> Path:
    return Path(course) / FOLDER / f"{module}.json"


def load(course: Path, module: str) -> list:
    "The course's misconceptions for `module` ([] when it has no library)."
    path = library_path(course, module)
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [Misconception(str(e["id"]), str(e["function"]), tuple((str(a), str(b)) for a, b in e["edits"]),
                              str(e["explanation"])) for e in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise MisconceptionError(f"{path}: expected a list of {{id, function, edits: [[old, new], ...], "
                                 f"explanation}}, got an error: {error}") from None


def _variant_cell(code_cells: list, misconception: Misconception) -> tuple:
    "(index of the code cell defining the function, its source with the misconception's edits)."
    from tito.grading.notebooks import cell_text
    found = [i for i, c in enumerate(code_cells) if f"def {misconception.function}(" in cell_text(c)]
    if len(found) != 1:
        raise MisconceptionError(f"misconception {misconception.id}: expected one cell defining "
                                 f"{misconception.function}, found {len(found)}")
    text = cell_text(code_cells[found[0]])
    for old, new in misconception.edits:
        if text.count(old) != 1:
            raise MisconceptionError(f"misconception {misconception.id}: expected {old!r} once in "
                                     f"{misconception.function}, found it {text.count(old)} times: update "
                                     f"{FOLDER}/ to the source")
        text = text.replace(old, new)
    return found[0], text


def variant_records(source, misconceptions: list, cell_seconds: int = 20) -> dict:
    "{misconception id: {grade_id: {name: Record}}}: what each variant prints in the graded cells."
    from tito.grading.mutation import _executable, _Worker
    if not misconceptions:
        return {}
    worker = _Worker(json.loads(json.dumps(source)), cell_seconds, verdict="records")
    records = {}
    for misconception in misconceptions:
        index, text = _variant_cell(worker.code_cells, misconception)
        records[misconception.id] = worker.records_with(index, _executable(text))
    return records


def cached_variant_records(assignment, misconceptions: list, state: Path, cell_seconds: int = 20) -> dict:
    "variant_records, kept in `state` by the source's and the library's hashes."
    if not misconceptions:
        return {}
    key = hashlib.sha256((assignment.source_hash + json.dumps([m.__dict__ for m in misconceptions],
                                                              sort_keys=True)).encode()).hexdigest()[:16]
    cache = Path(state) / f"misconceptions-{key}.json"
    if cache.exists():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        return {mid: {gid: decode_records(text) for gid, text in cells.items()} for mid, cells in stored.items()}
    records = variant_records(assignment.source, misconceptions, cell_seconds)
    stored = {mid: {gid: "\n".join(encode_record(n, r.value, r.concept, r.points) for n, r in recs.items())
                    for gid, recs in cells.items()} for mid, cells in records.items()}
    atomic_write(cache, json.dumps(stored))
    return records


def name_them(printed: dict, reference: dict, variants: dict, misconceptions: list) -> dict:
    """{grade_id: [explanation]} for the cells whose wrong records a misconception explains: the
    student printed, in that cell, exactly the records the variant gets wrong, with the variant's
    values, and got nothing else wrong there. `printed`: {grade_id: {name: Record}} of the student."""
    by_id = {m.id: m for m in misconceptions}
    named = {}
    for gid, expected in reference.items():
        got = printed.get(gid, {})
        wrong = {name for name, rec in expected.items() if name in got and not record_matches(rec, got[name])}
        if not wrong:
            continue
        for mid, cells in variants.items():
            variant = cells.get(gid, {})
            differs = {name for name, rec in expected.items() if name in variant and not record_matches(rec, variant[name])}
            if differs == wrong and all(record_matches(variant[name], got[name]) for name in wrong):
                named.setdefault(gid, []).append(by_id[mid].explanation)
    return named
