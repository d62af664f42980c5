"""Mutation testing of a module's hidden tests.

A *mutant* is the reference notebook with one small change inside one solution region:
a constant moved by one, `-np.inf` turned into 0, an arithmetic or comparison operator swapped,
`+=` turned into `=`, an axis dropped from a reduction, a loop range shortened or lengthened,
a statement deleted, two index names swapped. A mutant is *killed* when at least one graded cell
fails on it, with the grader's own verdict: the cell raises, or a record it prints differs from
the reference solution's record. The share of killed mutants measures how strong the checks are.

Speed: the whole notebook runs once per worker; for each mutant only the mutated cell is
re-executed (its functions replace the originals) and then the graded cells run in order,
stopping at the first that fails. Graded cells therefore must be self-contained (build their own
inputs), which is what makes them robust for grading too.
"""
import ast
import contextlib
import copy
import io
import json
import multiprocessing
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytorch.record import decode_records
from tito.grading.notebooks import SOLUTION, cell_text, is_graded, region_spans
from tito.grading.scoring import record_matches, split_points


@dataclass
class Mutant:
    cell: int          # index of the code cell in the notebook
    line: int          # line in that cell (1-based)
    operator: str      # e.g. "swap Add->Sub"
    source: str        # the mutated cell's source (unparsed)
    original_line: str = ""

    @property
    def key(self) -> str:
        "Stable identity, used to list mutants judged equivalent."
        return f"{self.function}:{self.operator}:{self.original_line.strip()}"

    function: str = ""


@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    reason: str = ""   # which graded cell failed, and how
    lost: float | None = None   # share of the module's points the mutant loses (when every graded cell was judged)
    named: bool | None = None   # the feedback names a misconception of the course's library (when one was given)


@dataclass
class Report:
    outcomes: list = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(o.killed for o in self.outcomes)

    @property
    def score(self) -> float:
        return self.killed / max(1, len(self.outcomes))

    def survivors(self) -> list:
        return [o.mutant for o in self.outcomes if not o.killed]

    @property
    def mean_lost(self) -> float | None:
        "Mean share of the points a killed mutant loses, when the points were judged."
        lost = [o.lost for o in self.outcomes if o.killed and o.lost is not None]
        return sum(lost) / len(lost) if lost else None

    @property
    def named_share(self) -> float | None:
        "Share of the killed mutants whose wrong records a misconception of the library explains."
        named = [o.named for o in self.outcomes if o.killed and o.named is not None]
        return sum(named) / len(named) if named else None


# -- finding the solution regions -------------------------------------------------------------
def solution_lines(source: str) -> set:
    "1-based line numbers strictly inside BEGIN/END SOLUTION markers."
    return {index + 1 for first, last in region_spans(source.splitlines(), *SOLUTION) for index in range(first, last)}


def _executable(source: str) -> str:
    "Cell source as plain Python: IPython magics and shell escapes dropped."
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


# -- the mutation operators ------------------------------------------------------------------------
_ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
_COMPARISON = {ast.Gt: (ast.GtE, ast.Lt), ast.GtE: (ast.Gt, ast.LtE), ast.Lt: (ast.LtE, ast.Gt),
               ast.LtE: (ast.Lt, ast.GtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,)}
_SWAPPED_CALLS = {"maximum": "minimum", "minimum": "maximum", "max": "min", "min": "max",
                  "sum": "mean", "mean": "sum", "argmax": "argmin", "var": "std", "std": "var"}


def _is_inf(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "inf"


def _sites(tree, lines: set):
    """Every (node index in ast.walk order, operator name, apply) for nodes inside the solution lines.
    `apply(node, parent_of)` mutates a deep copy in place."""
    nodes = list(ast.walk(tree))
    parent_of = {}
    for parent in nodes:
        for child in ast.iter_child_nodes(parent):
            parent_of[id(child)] = parent
    for index, node in enumerate(nodes):
        if getattr(node, "lineno", None) not in lines:
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_inf(node.operand):
            yield index, "-inf -> 0", lambda n: setattr(n, "operand", ast.Constant(0))
            yield index, "-inf -> +inf", lambda n: setattr(n, "op", ast.UAdd())
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            for delta in (+1, -1):
                yield index, f"constant {node.value!r} {'+' if delta > 0 else '-'} 1", \
                    (lambda d: lambda n: setattr(n, "value", n.value + d))(delta)
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _ARITHMETIC:
            new = _ARITHMETIC[type(node.op)]
            yield index, f"swap {type(node.op).__name__}->{new.__name__}", (lambda o: lambda n: setattr(n, "op", o()))(new)
        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                for new in _COMPARISON.get(type(op), ()):
                    yield index, f"swap {type(op).__name__}->{new.__name__}", \
                        (lambda p, o: lambda n: n.ops.__setitem__(p, o()))(position, new)
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in _SWAPPED_CALLS:
                other = _SWAPPED_CALLS[name]
                if isinstance(node.func, ast.Attribute):
                    yield index, f"call {name}->{other}", (lambda o: lambda n: setattr(n.func, "attr", o))(other)
                else:
                    yield index, f"call {name}->{other}", (lambda o: lambda n: setattr(n.func, "id", o))(other)
            if name == "range" and node.args:
                for position in range(len(node.args)):
                    for delta in (+1, -1):
                        yield index, f"range argument {position} {'+' if delta > 0 else '-'} 1", \
                            (lambda p, d: lambda n: n.args.__setitem__(
                                p, ast.BinOp(n.args[p], ast.Add(), ast.Constant(d))))(position, delta)
            for position, keyword in enumerate(node.keywords):
                if keyword.arg == "axis" and isinstance(keyword.value, ast.Tuple):
                    for drop in range(len(keyword.value.elts)):
                        yield index, f"axis drops element {drop}", \
                            (lambda p, d: lambda n: n.keywords[p].value.elts.pop(d))(position, drop)
                if keyword.arg in ("axis", "keepdims", "ddof"):
                    yield index, f"keyword {keyword.arg} removed", (lambda p: lambda n: n.keywords.pop(p))(position)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            names = [(i, e.id) for i, e in enumerate(node.slice.elts) if isinstance(e, ast.Name)]
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    (i, first), (j, second) = names[a], names[b]
                    if first != second:
                        yield index, f"swap index {first}<->{second}", \
                            (lambda i, j: lambda n: _swap_elements(n.slice.elts, i, j))(i, j)
        if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Return)):
            parent = parent_of.get(id(node))
            if parent is not None and node.lineno in lines:
                if isinstance(node, ast.AugAssign):
                    yield index, "augmented assignment -> assignment", \
                        lambda n: setattr(n, "_replace_with", ast.Assign(targets=[n.target], value=n.value, lineno=n.lineno))
                yield index, "statement deleted", lambda n: setattr(n, "_replace_with", ast.Pass(lineno=n.lineno))


def _swap_elements(elements, i, j):
    elements[i], elements[j] = elements[j], elements[i]


class _Replace(ast.NodeTransformer):
    "Swap in `_replace_with` nodes left by statement operators."
    def generic_visit(self, node):
        super().generic_visit(node)
        return getattr(node, "_replace_with", node)


def _enclosing_function(tree, line: int) -> str:
    names = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
             and n.lineno <= line <= getattr(n, "end_lineno", n.lineno)]
    return ".".join(names) if names else "<cell>"


def generate_mutants(notebook: dict) -> list:
    "Every single-point mutant of every solution region, in notebook order."
    mutants = []
    code_cells = [c for c in notebook["cells"] if c.get("cell_type") == "code"]
    for cell_index, cell in enumerate(code_cells):
        source = cell_text(cell)
        lines = solution_lines(source)
        if not lines:
            continue
        text = _executable(source)
        tree = ast.parse(text)
        original_lines = text.splitlines()
        for node_index, operator, apply in list(_sites(tree, lines)):
            mutated = copy.deepcopy(tree)
            node = list(ast.walk(mutated))[node_index]
            apply(node)
            mutated = ast.fix_missing_locations(_Replace().visit(mutated))
            try:
                new_source = ast.unparse(mutated)
            except Exception:
                continue
            line = node.lineno
            mutants.append(Mutant(cell=cell_index, line=line, operator=operator, source=new_source,
                                  original_line=original_lines[line - 1],
                                  function=_enclosing_function(tree, line)))
    unique, seen = [], set()
    for mutant in mutants:  # two operators can give the same program (e.g. -inf -> 0 and constant rules)
        if (mutant.cell, mutant.source) not in seen:
            seen.add((mutant.cell, mutant.source))
            unique.append(mutant)
    return unique


# -- running them --------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


def _raise_timeout(signum, frame):
    raise _Timeout()


def _run_cell(source: str, namespace: dict, seconds: int, asserts: bool = True) -> tuple:
    "Execute one cell (without its assert statements when `asserts` is False); returns (error or None, printed text)."
    printed = io.StringIO()
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(source, "<cell>", "exec", optimize=0 if asserts else 1), namespace)
        return None, printed.getvalue()
    except _Timeout:
        return f"timed out after {seconds} s", printed.getvalue()
    except BaseException as error:  # a mutant may raise anything, SystemExit included
        return f"{type(error).__name__}: {error}", printed.getvalue()
    finally:
        signal.alarm(0)


def _records_match(reference: dict, got: dict) -> str:
    "'' when every reference record was printed (`got`, decoded) and matches (the grader's own comparison); else the first that does not."
    for name, expected in reference.items():
        if name not in got:
            return f"record {name} missing"
        if not record_matches(expected, got[name]):
            return f"record {name} differs: {expected.concept}"
    return ""


def _points_kept(reference: dict, got: dict, max_points: float) -> float:
    "The points a graded cell keeps under the grader's per-check rule (scoring.split_points); `got` decoded."
    return sum(points for _, names, points in split_points(reference, max_points)
               if all(record_matches(reference[n], got.get(n)) for n in names))


class _Worker:
    """Runs the reference notebook once, then judges mutants against it.

    verdict "grader": a graded cell fails when it raises or a record differs (what `tito grade` does).
    verdict "records": asserts are stripped from the graded cells and only missing or different
    records count -- the strength left when a student has disabled every assert."""
    def __init__(self, notebook: dict, cell_seconds: int, verdict: str = "grader", points: bool = False,
                 library: tuple = ()):
        import matplotlib
        import warnings
        matplotlib.use("Agg")
        warnings.simplefilter("ignore")  # mutants divide by zero; their warnings are noise here
        if verdict not in ("grader", "records"):
            raise ValueError(f"verdict must be 'grader' or 'records', got {verdict!r}")
        self.verdict, self.points = verdict, points
        self.library = library   # (variant records, misconceptions) to tell which mutants the feedback names
        self.cell_seconds = cell_seconds
        self.code_cells = [c for c in notebook["cells"] if c.get("cell_type") == "code"]
        self.namespace = {"__name__": "__main__"}
        self.graded = []   # (index, source, reference records, points)
        self.graded_ids = []
        for index, cell in enumerate(self.code_cells):
            source = _executable(cell_text(cell))
            error, printed = _run_cell(source, self.namespace, cell_seconds * 10)
            if error:
                raise RuntimeError(f"the reference notebook fails in code cell {index}: {error}")
            if is_graded(cell):
                points = float(cell["metadata"]["nbgrader"].get("points", 0))
                self.graded.append((index, source, decode_records(printed), points))
                self.graded_ids.append(cell["metadata"]["nbgrader"].get("grade_id"))
        import matplotlib.pyplot as plt
        plt.close("all")

    def records_with(self, index: int, source: str) -> dict:
        "{grade_id: {name: Record}} the graded cells print once code cell `index` is replaced by `source`."
        saved = dict(self.namespace)
        try:
            _run_cell(source, self.namespace, self.cell_seconds)
            return {self.graded_ids[i]: decode_records(_run_cell(graded, self.namespace, self.cell_seconds)[1])
                    for i, (_, graded, *_) in enumerate(self.graded)}
        finally:
            self.namespace.clear()
            self.namespace.update(saved)

    def judge(self, mutant: Mutant) -> Outcome:
        """Killed when a graded cell loses points (or raises, for the grader's verdict). With
        `self.points`, every graded cell runs so the share of points lost is known; without, the
        judging stops at the first cell that fails."""
        saved = dict(self.namespace)
        total = sum(points for *_, points in self.graded)
        try:
            error, _ = _run_cell(mutant.source, self.namespace, self.cell_seconds)
            if error:
                return Outcome(mutant, True, f"the mutated cell itself fails: {error}", 1.0 if self.points else None)
            first, kept, seen = "", 0.0, {}
            for (index, source, reference, points), gid in zip(self.graded, self.graded_ids):
                error, printed = _run_cell(source, self.namespace, self.cell_seconds,
                                           asserts=self.verdict == "grader")
                seen[gid] = got = decode_records(printed)
                reason = f"graded cell {index}: {error}" if error and self.verdict == "grader" else ""
                if not reason:
                    mismatch = _records_match(reference, got)
                    reason = f"graded cell {index}: {mismatch}" if mismatch else ""
                first = first or reason
                if first and not self.points:
                    return Outcome(mutant, True, first)
                kept += _points_kept(reference, got, points) if self.points else 0.0
            lost = (1.0 - kept / total) if self.points and total else None
            named = None
            if self.points and self.library:
                from tito.grading.misconceptions import name_them
                named = bool(name_them(seen, dict(zip(self.graded_ids, (g[2] for g in self.graded))), *self.library))
            return Outcome(mutant, bool(first), first, lost, named)
        finally:
            # Put the reference bindings back into the same dict: the functions and classes defined
            # in it look their helpers up in this dict (their __globals__), so it must not be replaced.
            self.namespace.clear()
            self.namespace.update(saved)


_worker = None


def _init_worker(notebook, cell_seconds, verdict, points, library=()):
    global _worker
    sys.setrecursionlimit(3000)
    _worker = _Worker(notebook, cell_seconds, verdict, points, library)


def _judge(mutant):
    try:
        return _worker.judge(mutant)
    except Exception:
        return Outcome(mutant, True, "harness error: " + traceback.format_exc(limit=1))


def run_mutants(notebook_path: Path, jobs: int = 2, cell_seconds: int = 20, progress: bool = True,
                verdict: str = "grader", points: bool = False, misconceptions: list = ()) -> Report:
    """Generate every mutant of `notebook_path` and judge them in `jobs` worker processes
    (`points`: run every graded cell of each mutant, to report the share of points it loses and,
    given the course's `misconceptions`, whether its feedback would name one)."""
    notebook = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    mutants = generate_mutants(notebook)
    library = ()
    if points and misconceptions:
        from tito.grading.misconceptions import variant_records
        library = (variant_records(notebook, misconceptions, cell_seconds), list(misconceptions))
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs, initializer=_init_worker,
                      initargs=(notebook, cell_seconds, verdict, points, library)) as pool:
        results = pool.imap(_judge, mutants, chunksize=1)
        if progress:
            from tqdm.auto import tqdm
            results = tqdm(results, total=len(mutants), desc="mutants", unit="mutant")
        return Report(list(results))


def load_equivalent(path: Path) -> dict:
    "Mutants shown to be equivalent to the solution: {key: why}, from a JSON file."
    if not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))
