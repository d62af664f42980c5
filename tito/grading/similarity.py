"""Which students handed in the same code, and which share the same wrong answers: flags for a
person to look at, never a change of score.

**Code.** For each submission, the code the student wrote (answer cells, added cells, edited
instructor cells; `policy.student_code`) is tokenised by Python's own `tokenize` and normalised:
every identifier becomes `N`, every number `0`, every string `S`; comments, docstrings (a string
that is a statement by itself) and layout vanish, except that statements end with `;` and
blocks open and close with `{` `}`. Every run of `k` normalised tokens is hashed (a polynomial
hash over stable token hashes, the same in every run), and winnowing (Schleimer, Wilkerson &
Aiken 2003, as MOSS) keeps the rightmost smallest hash of each `window` consecutive ones: any
match of at least `k + window - 1` tokens is certain to be seen, and reordering statements or
cells, renaming, comments and dead code only break the fingerprints that span the change.
Every k-gram of the released notebook (the scaffold students were handed) is removed from
every student's fingerprints, as MOSS's base file. The similarity of two students is the
larger of the two shares |A ∩ B| / |A| and |A ∩ B| / |B| -- how much of one student's code the
other has too -- so that padding a copy with dead code does not hide it; pairs at or above
`threshold` (and with at least MIN_SHARED fingerprints in common) are listed, ranked, each with
a side-by-side page that highlights the matching regions (all student text escaped).

**Wrong values.** The grader's verdict rests on recorded values (record.py, scoring.py). Two
students whose code prints the same *wrong* value for the same record of the same check, where
few others do (at most `wrong_values_max`), share a bug that is rare in the class: a collusion
signal only a record-based grader has. Read from the autograded notebooks of a course folder.
"""
import configparser
import hashlib
import html
import io
import json
import keyword
import tokenize
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MAX_PAGES = 300         # side-by-side pages written for the most similar pairs (all are in report.json)
MIN_SHARED = 8          # fewer shared fingerprints (~ 4 lines of code) never make a pair: tiny documents
_PRIME = np.uint64(1_000_003)
_COLOURS = 8


@dataclass(frozen=True)
class SimilaritySettings:
    k: int = 10
    window: int = 4
    threshold: float = 0.65
    wrong_values_max: int = 3


def load_similarity_settings(root: Path) -> SimilaritySettings:
    """`[similarity]` of `root/settings.ini` (the defaults when the section is absent); a bad value
    is an error naming the key, what it must be and what it was."""
    path = Path(root) / "settings.ini"
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    if not parser.has_section("similarity"):
        return SimilaritySettings()
    section, defaults, values = parser["similarity"], SimilaritySettings(), {}
    for key, kind, low, high in (("k", int, 2, 200), ("window", int, 1, 200), ("threshold", float, 0.0, 1.0),
                                 ("wrong_values_max", int, 2, 10**6)):
        text = section.get(key, str(getattr(defaults, key))).strip()
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ValueError(f"{path}: [similarity] {key} must be a{'n integer' if kind is int else ' number'} "
                             f"from {low} to {high}, got {text!r}")
        values[key] = value
    return SimilaritySettings(**values)


# ---------------------------------------------------------------- normalised tokens and fingerprints

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def normalise(text: str) -> list:
    """[(normalised token, start, end)] of Python code `text` (offsets into `text`); code that
    does not tokenise to the end keeps the tokens before the fault."""
    from tito.grading.policy import _strip_magics
    text = _strip_magics(text)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(position):
        row, col = position
        return starts[min(row - 1, len(starts) - 1)] + col

    tokens, depth = [], 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = tok.type
            if _FSTRING_START is not None and kind in (_FSTRING_START, _FSTRING_END):
                depth += 1 if kind == _FSTRING_START else -1
                if kind == _FSTRING_START and depth == 1:
                    tokens.append(["S", offset(tok.start), offset(tok.end)])
                elif depth == 0:
                    tokens[-1][2] = offset(tok.end)
                continue
            if depth or kind in _SKIP or (kind == tokenize.ERRORTOKEN and not tok.string.strip()):
                continue
            if kind == tokenize.NAME:
                norm = tok.string if keyword.iskeyword(tok.string) else "N"
            elif kind == tokenize.NUMBER:
                norm = "0"
            elif kind == tokenize.STRING:
                norm = "S"
            elif kind == tokenize.NEWLINE:
                norm = ";"
            elif kind == tokenize.INDENT:
                norm = "{"
            elif kind == tokenize.DEDENT:
                norm = "}"
            else:
                norm = tok.string
            tokens.append([norm, offset(tok.start), offset(tok.end)])
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    # A string that is a whole statement (a docstring, a string used as a comment) says nothing.
    kept = []
    for index, token in enumerate(tokens):
        follows = tokens[index + 1][0] if index + 1 < len(tokens) else ";"
        if token[0] == "S" and (not kept or kept[-1][0] in ";{}") and follows == ";":
            continue
        if token[0] == ";" and kept and kept[-1][0] in ";{}" and index and tokens[index - 1][0] == "S":
            continue   # the docstring's own end of statement
        kept.append(tuple(token))
    return kept


def kgram_hashes(norms: list, k: int) -> np.ndarray:
    "A stable 64-bit hash of every run of `k` consecutive normalised tokens."
    if len(norms) < k:
        return np.zeros(0, dtype=np.uint64)
    ids = np.array([zlib.crc32(t.encode()) for t in norms], dtype=np.uint64)
    powers = np.ones(k, dtype=np.uint64)
    with np.errstate(over="ignore"):    # arithmetic modulo 2**64, on purpose
        for i in range(k - 2, -1, -1):
            powers[i] = powers[i + 1] * _PRIME
        windows = np.lib.stride_tricks.sliding_window_view(ids, k)
        return (windows * powers).sum(axis=1, dtype=np.uint64)


def winnow(hashes: np.ndarray, window: int) -> np.ndarray:
    "Positions chosen by robust winnowing: the rightmost minimum of every `window` consecutive hashes."
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(hashes) <= window:
        return np.array([len(hashes) - 1 - int(np.argmin(hashes[::-1]))])
    views = np.lib.stride_tricks.sliding_window_view(hashes, window)
    rightmost = window - 1 - np.argmin(views[:, ::-1], axis=1)
    return np.unique(rightmost + np.arange(len(views)))


@dataclass
class Document:
    "One student's own code, as cells of text with their normalised tokens and winnowed fingerprints."
    student: str
    cells: list                                        # the student's code cells (text)
    tokens: list = field(default_factory=list)         # per cell: [(norm, start, end)]
    hashes: np.ndarray = None                          # (n,) fingerprints kept (base removed)
    places: list = field(default_factory=list)         # per fingerprint: (cell, token index)

    def fingerprint(self, settings: SimilaritySettings, base: np.ndarray) -> "Document":
        self.tokens = [normalise(text) for text in self.cells]
        hashes, places = [], []
        for cell, tokens in enumerate(self.tokens):
            values = kgram_hashes([t[0] for t in tokens], settings.k)
            for position in winnow(values, settings.window):
                hashes.append(values[position])
                places.append((cell, int(position)))
        values = np.array(hashes, dtype=np.uint64)
        keep = ~np.isin(values, base) if len(values) else np.zeros(0, dtype=bool)
        self.hashes = values[keep]
        self.places = [place for place, kept in zip(places, keep) if kept]
        return self

    @property
    def unique(self) -> np.ndarray:
        return np.unique(self.hashes)


def base_hashes(release, settings: SimilaritySettings) -> np.ndarray:
    "Every k-gram of the released notebook's code (the scaffold every student was handed)."
    from tito.grading.notebooks import cell_text
    values = [kgram_hashes([t[0] for t in normalise(cell_text(c))], settings.k)
              for c in release.cells if c.get("cell_type") == "code"]
    return np.unique(np.concatenate(values)) if values else np.zeros(0, dtype=np.uint64)


# ---------------------------------------------------------------- pairs of similar code

@dataclass
class Pair:
    a: str
    b: str
    similarity: float          # max(share_a, share_b)
    shared: int                # fingerprints in common
    share_a: float             # of a's fingerprints, the share b has too
    share_b: float
    page: str = ""             # side-by-side page, relative to the report folder


def similar_pairs(documents: list, settings: SimilaritySettings) -> list:
    "Pairs at or above the threshold, most similar first (a sparse product: fine for thousands)."
    from scipy import sparse
    documents = [d for d in documents if len(d.hashes)]
    if len(documents) < 2:
        return []
    uniques = [d.unique for d in documents]
    everything, column = np.unique(np.concatenate(uniques), return_inverse=True)
    rows = np.repeat(np.arange(len(documents)), [len(u) for u in uniques])
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, column)),
                               shape=(len(documents), len(everything)))
    shared = (matrix @ matrix.T).toarray()
    sizes = np.diag(shared).copy()
    pairs = []
    for i, j in zip(*np.triu_indices(len(documents), k=1)):
        common = shared[i, j]
        if common < MIN_SHARED:
            continue
        similarity = common / min(sizes[i], sizes[j])
        if similarity >= settings.threshold:
            pairs.append(Pair(documents[i].student, documents[j].student, float(similarity), int(common),
                              float(common / sizes[i]), float(common / sizes[j])))
    pairs.sort(key=lambda p: (-p.similarity, p.a, p.b))
    return pairs


# ---------------------------------------------------------------- the same wrong values

@dataclass
class SharedWrong:
    a: str
    b: str
    records: list              # [(grade id, record name, concept)] both got wrong, in the same way


def _signature(value: np.ndarray) -> str:
    "The same for two arrays equal to about 6 significant digits."
    scale = max(1.0, float(np.nanmax(np.abs(value)))) if value.size and np.isfinite(value).any() else 1.0
    rounded = np.round(value / scale, 6) + 0.0   # + 0.0: -0.0 and 0.0 alike
    return hashlib.sha256(repr(value.shape).encode() + rounded.tobytes()).hexdigest()[:24]


def wrong_records(executed, reference: dict) -> dict:
    "{(grade id, record name): signature} of the records of an autograded notebook that are wrong."
    from tito.grading.notebooks import grade_id, is_graded
    from tinytorch.record import decode_records
    from tito.grading.scoring import record_matches, stdout_text
    wrong = {}
    for cell in executed.cells:
        gid = grade_id(cell)
        if cell.get("cell_type") != "code" or not is_graded(cell) or gid not in reference:
            continue
        printed = decode_records(stdout_text(cell))
        for name, expected in reference[gid].items():
            if name in printed and not record_matches(expected, printed[name]):
                wrong[(gid, name)] = _signature(printed[name].value)
    return wrong


def shared_wrong_values(wrong: dict, reference: dict, settings: SimilaritySettings) -> list:
    "Pairs of students who share wrong values that at most `wrong_values_max` students have."
    holders = {}
    for student, records in wrong.items():
        for key, signature in records.items():
            holders.setdefault((key, signature), []).append(student)
    pairs = {}
    for (key, _), students in holders.items():
        if 2 <= len(students) <= settings.wrong_values_max:
            students = sorted(students)
            for i, a in enumerate(students):
                for b in students[i + 1:]:
                    pairs.setdefault((a, b), []).append(key)
    result = []
    for (a, b), keys in pairs.items():
        records = sorted((gid, name, reference.get(gid, {}).get(name, (None, ""))[1]) for gid, name in keys)
        result.append(SharedWrong(a, b, records))
    result.sort(key=lambda s: (-len(s.records), s.a, s.b))
    return result


def course_wrong_values(course: Path, assignment, students: list) -> tuple:
    """({student: wrong records}, reference records) from a graded course folder, or ({}, {}) when
    it holds no reference records for this source (not graded yet)."""
    import nbformat
    from tito.grading.model import STATE
    from tinytorch.record import decode_records
    cache = Path(course) / STATE / f"reference-{assignment.source_hash[:16]}.json"
    if not cache.exists():
        return {}, {}
    reference = {gid: decode_records(text) for gid, text in json.loads(cache.read_text(encoding="utf-8")).items()}
    wrong = {}
    for student in students:
        path = Path(course) / "autograded" / student / assignment.module / assignment.notebook
        if path.is_file():
            try:
                wrong[student] = wrong_records(nbformat.read(path, as_version=4), reference)
            except (OSError, ValueError):
                continue
    return wrong, reference


# ---------------------------------------------------------------- the whole class

@dataclass
class Report:
    settings: SimilaritySettings
    students: int                      # submissions compared
    pairs: list                        # Pair, most similar first
    wrong: list                        # SharedWrong, most records first
    library: dict                      # {student: [policy finding flags]}
    skipped: dict                      # {student: why their code was not compared}
    wrong_values_checked: bool         # False: no graded course folder to read records from
    folder: Path | None = None         # where index.html and the pair pages are

    def groups(self) -> list:
        "Students linked by similar code, as sorted groups, the group holding the most similar pair first."
        parent = {}

        def root(x):
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for pair in self.pairs:
            parent[root(pair.a)] = root(pair.b)
        groups = {}
        for pair in self.pairs:
            groups.setdefault(root(pair.a), set()).update((pair.a, pair.b))
        best = {r: max(p.similarity for p in self.pairs if root(p.a) == r) for r in groups}
        return [sorted(groups[r]) for r in sorted(groups, key=lambda r: (-best[r], sorted(groups[r])))]

    def as_json(self) -> dict:
        return {"settings": asdict(self.settings), "students": self.students,
                "pairs": [asdict(p) for p in self.pairs],
                "wrong_values": [{"a": s.a, "b": s.b, "records": [{"check": g, "record": n, "concept": c}
                                                                   for g, n, c in s.records]} for s in self.wrong],
                "wrong_values_checked": self.wrong_values_checked,
                "library_use": self.library, "skipped": self.skipped}


def class_documents(submissions: list, assignment, settings: SimilaritySettings, policy=None,
                    max_notebook_mb: float = float("inf")) -> tuple:
    """(documents, {student: library findings}, {student: why skipped}) of a class's submissions
    (a file above `max_notebook_mb` is not read, as the grader does not read it)."""
    from tito.grading.notebooks import InvalidNotebook, read_submission
    from tito.grading.policy import check_submission, student_code
    base = base_hashes(assignment.release, settings)
    documents, library, skipped = [], {}, {}
    for sub in submissions:
        if sub.path is None:
            skipped[sub.student] = sub.problem or "no notebook"
            continue
        too_large = sub.oversize(max_notebook_mb)
        if too_large:
            skipped[sub.student] = f"not read: {too_large}"
            continue
        try:
            notebook = read_submission(sub.data())
        except (InvalidNotebook, OSError) as error:
            skipped[sub.student] = f"not read: {error}"
            continue
        texts = student_code(notebook, assignment.source, assignment.release)
        if policy is not None:
            findings = check_submission(notebook, assignment, policy)
            if findings:
                library[sub.student] = [f.as_flag() for f in findings]
        document = Document(sub.student, texts).fingerprint(settings, base)
        if not len(document.hashes):
            skipped[sub.student] = "no code of their own beyond the handout"
            continue
        documents.append(document)
    return documents, library, skipped


def compare_class(directory: Path, root: Path, course: Path | None = None, out: Path | None = None,
                  settings: SimilaritySettings | None = None) -> Report:
    """The integrity report of the submissions in `directory` against the course at `root`
    (source/, release/, settings.ini); wrong values from the graded course folder `course` when
    given; pages and report.json written into `out/similarity/` when `out` is given."""
    from tito.grading.course import load_assignment
    from tito.grading.find import discover
    from tito.grading.policy import load_policy
    from tito.settings import load_settings
    root = Path(root)
    course_settings = load_settings(root)
    module = course_settings.modules[0]
    assignment = load_assignment(root, module, course_settings.notebook(module))
    settings = settings or load_similarity_settings(root)
    submissions = discover(directory, module, assignment.notebook)
    documents, library, skipped = class_documents(submissions, assignment, settings, load_policy(root),
                                                  course_settings.max_notebook_mb)
    pairs = similar_pairs(documents, settings)
    wrong, reference = course_wrong_values(course, assignment, [s.student for s in submissions]) if course else ({}, {})
    report = Report(settings, len(documents), pairs, shared_wrong_values(wrong, reference, settings), library,
                    skipped, bool(reference))
    if out is not None:
        write_report(report, {d.student: d for d in documents}, Path(out) / "similarity")
    return report


# ---------------------------------------------------------------- pages (student text is hostile: escaped)

def _spans(document: Document, shared: set, k: int) -> dict:
    "{cell: [(start, end, {hashes})]} of the merged character spans of `document` matching `shared`."
    spans = {}
    for value, (cell, position) in zip(document.hashes, document.places):
        if int(value) not in shared:
            continue
        tokens = document.tokens[cell]
        start, end = tokens[position][1], tokens[min(position + k, len(tokens)) - 1][2]
        spans.setdefault(cell, []).append([start, end, {int(value)}])
    merged = {}
    for cell, items in spans.items():
        items.sort(key=lambda s: s[0])
        out = [items[0]]
        for start, end, values in items[1:]:
            if start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
                out[-1][2] |= values
            else:
                out.append([start, end, values])
        merged[cell] = out
    return merged


def _render(document: Document, spans: dict, colour_of: dict) -> str:
    parts = []
    for cell, text in enumerate(document.cells):
        pieces, cursor = [], 0
        for start, end, values in spans.get(cell, []):
            colour = min((colour_of[v] for v in values if v in colour_of), default=0)
            pieces.append(html.escape(text[cursor:start]))
            pieces.append(f'<mark class="m{colour}">{html.escape(text[start:end])}</mark>')
            cursor = end
        pieces.append(html.escape(text[cursor:]))
        parts.append(f"<pre>{''.join(pieces)}</pre>")
    return "\n".join(parts)


_STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:.3em .6em;text-align:left}pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:12px}
.side{display:flex;gap:1em}.side>div{flex:1;min-width:0}""" + "".join(
    f".m{i}{{background:hsl({i * 45},80%,80%)}}" for i in range(_COLOURS))


def _page(title: str, body: str) -> str:
    # No script may run on these pages, whatever a student wrote.
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="default-src \'none\'; style-src \'unsafe-inline\'"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def pair_page(pair: Pair, a: Document, b: Document, settings: SimilaritySettings) -> str:
    shared = {int(v) for v in np.intersect1d(a.unique, b.unique)}
    spans_a, spans_b = _spans(a, shared, settings.k), _spans(b, shared, settings.k)
    colour_of = {}
    for index, (start, end, values) in enumerate(s for cell in sorted(spans_a) for s in spans_a[cell]):
        for value in values:
            colour_of.setdefault(value, index % _COLOURS)
    name_a, name_b = html.escape(pair.a), html.escape(pair.b)
    body = (f"<h1>{name_a} and {name_b}: {pair.similarity:.0%} similar</h1>"
            f"<p>{pair.shared} fingerprints in common: {pair.share_a:.0%} of {name_a}'s, {pair.share_b:.0%} of "
            f"{name_b}'s. Highlighted: code both have, after renaming, comments and layout are set aside "
            f"(the same colour marks the same match). This is a pointer for a person to look, not a verdict.</p>"
            f'<div class="side"><div><h2>{name_a}</h2>{_render(a, spans_a, colour_of)}</div>'
            f'<div><h2>{name_b}</h2>{_render(b, spans_b, colour_of)}</div></div>'
            f'<p><a href="index.html">all pairs</a></p>')
    return _page(f"{pair.a} and {pair.b}", body)


def write_report(report: Report, documents: dict, folder: Path) -> Path:
    "index.html, one page per listed pair and report.json in `folder`; returns the index."
    from tito.grading.intake import atomic_write
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("pair-*.html"):
        stale.unlink()
    for number, pair in enumerate(report.pairs[:MAX_PAGES], 1):
        pair.page = f"pair-{number:03d}.html"    # never a student's name in a path
        atomic_write(folder / pair.page, pair_page(pair, documents[pair.a], documents[pair.b], report.settings))
    s = report.settings
    rows = "".join(f'<tr><td>{n}</td><td>{html.escape(p.a)}</td><td>{html.escape(p.b)}</td>'
                   f'<td>{p.similarity:.0%}</td><td>{p.shared}</td><td>{p.share_a:.0%} / {p.share_b:.0%}</td>'
                   + (f'<td><a href="{p.page}">side by side</a></td></tr>' if p.page else "<td></td></tr>")
                   for n, p in enumerate(report.pairs, 1))
    wrong = "".join(f"<tr><td>{html.escape(w.a)}</td><td>{html.escape(w.b)}</td><td>{len(w.records)}</td>"
                    f"<td>{html.escape(', '.join(sorted({g for g, _, _ in w.records})))}</td></tr>" for w in report.wrong)
    library = "".join(f"<tr><td>{html.escape(student)}</td><td>{html.escape(describe_flag(flag))}</td></tr>"
                      for student, flags in sorted(report.library.items()) for flag in flags)
    body = (f"<h1>Academic integrity: {report.students} submissions compared</h1>"
            f"<p>Flags for a person to look at; no score was changed by similarity. Code is compared after "
            f"renaming, literals, comments, docstrings and layout are set aside, with the handout removed "
            f"(k = {s.k} tokens, window {s.window}); pairs at or above {s.threshold:.0%} are listed.</p>"
            f"<h2>Similar code ({len(report.pairs)} pairs)</h2><table><tr><th>#</th><th>student</th><th>student</th>"
            f"<th>similarity</th><th>fingerprints in common</th><th>share of each</th><th></th></tr>{rows}</table>"
            f"<h2>The same wrong recorded values ({len(report.wrong)} pairs)</h2>"
            + ("<p>Not checked: no graded course folder was given.</p>" if not report.wrong_values_checked else
               f"<p>Wrong values that at most {s.wrong_values_max} students share.</p>")
            + f"<table><tr><th>student</th><th>student</th><th>wrong records shared</th><th>checks</th></tr>{wrong}</table>"
            f"<h2>Library use ({len(report.library)} students)</h2><table><tr><th>student</th><th>what the "
            f"static scan found</th></tr>{library}</table>")
    atomic_write(folder / "index.html", _page("Academic integrity", body))
    atomic_write(folder / "report.json", json.dumps(report.as_json(), indent=1, ensure_ascii=False))
    report.folder = folder
    return folder / "index.html"


# ---------------------------------------------------------------- text for the terminal

def describe_flag(flag: dict) -> str:
    "A library-use flag (policy.Finding.as_flag) in words."
    names = ", ".join(flag["names"][:3]) + (" …" if len(flag["names"]) > 3 else "")
    if not flag["function"]:
        return f"outside the graded functions: {names} (not scored)"
    through = f" (through {', '.join(flag['via'])})" if flag["via"] else ""
    action = {"zero_cell": "checks zeroed", "flag": "points kept"}.get(flag["action"], flag["action"])
    return f"{flag['function']} calls {names}{through} [{', '.join(flag['cells'])}: {action}]"


def terminal_safe(text: str) -> str:
    "A student's name or text with control characters (escape sequences) made visible, for a terminal."
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def format_report(report: Report, top: int = 8) -> str:
    "The integrity section of the class summary."
    s, say = report.settings, terminal_safe
    lines = ["academic integrity (flags for a person to look at; similarity changes no score):"]
    groups = report.groups()
    lines.append(f"  similar code (≥ {s.threshold:.0%}, k {s.k}, window {s.window}): {_count(len(report.pairs), 'pair')}"
                 + (f" in {len(groups)} groups" if report.pairs else "") + f" of {report.students} submissions")
    for group in groups[:top]:
        best = max((p for p in report.pairs if p.a in group), key=lambda p: p.similarity)
        if len(group) == 2:
            lines.append(f"    {say(best.a)} ~ {say(best.b)}  {best.similarity:.0%}")
        else:
            lines.append(f"    group of {len(group)}: {', '.join(say(g) for g in group[:6])}"
                         f"{' …' if len(group) > 6 else ''} (most similar: {say(best.a)} ~ {say(best.b)} "
                         f"{best.similarity:.0%})")
    if not report.wrong_values_checked:
        lines.append("  the same wrong recorded values: not checked (no graded course folder)")
    else:
        lines.append(f"  the same wrong recorded values (shared by at most {s.wrong_values_max} students): "
                     f"{_count(len(report.wrong), 'pair')}")
        for shared in report.wrong[:top]:
            checks = sorted({g for g, _, _ in shared.records})
            lines.append(f"    {say(shared.a)} ~ {say(shared.b)}: {_count(len(shared.records), 'wrong record')} in "
                         f"{', '.join(checks)}")
    lines.append(f"  library use (settings.ini [policy]): {_count(len(report.library), 'student')}")
    for student, flags in sorted(report.library.items())[:top * 2]:
        for flag in flags:
            lines.append(f"    {say(student)}: {say(describe_flag(flag))}")
    if report.folder is not None:
        lines.append(f"  pages: {report.folder / 'index.html'}")
    return "\n".join(lines)
