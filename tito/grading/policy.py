"""The course's library-use policy (settings.ini `[policy]`): what the graded loop functions may not use.

Two halves, because neither is enough alone:

- **Enforced where it cannot be dodged.** In the bubblewrap sandbox every forbidden module that
  is installed where the kernel could find it (the virtual environment, the Python installation,
  /usr) has its folder or file covered by a read-only stub whose import raises
  ModuleNotFoundError (`bwrap_hiding`). The files are not there for the kernel, so no import
  hook, `sys.path` trick, `importlib` call or `ctypes` load brings them back. The course's own
  fast path (`tinytorch.core.im2col`) is not in the student runtime at all (sandbox/runtime.py).
  Without the sandbox nothing is hidden: the policy is then the static scan alone.
- **Reported.** A static scan (`ast`) of the code the student wrote finds every forbidden module
  or call each graded function reaches — directly, through an alias (`import torch.nn.functional
  as F`), an import in another cell, a helper function of their own, `importlib.import_module`
  or `__import__` — so that `detail` and the feedback say "conv2d_loops calls
  torch.nn.functional.conv2d: this module asks for loops", and the cells that check that
  function follow `on_use`: `flag` (points as earned) or `zero_cell` (no points).

A scan can be fooled by code built at run time (`eval` of a string); the sandbox cannot.
"""
import ast
import atexit
import builtins
import configparser
import glob
import hashlib
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

ON_USE = ("flag", "zero_cell")
DEFAULT_FORBIDDEN = ("torch", "tensorflow", "jax", "scipy.signal", "scipy.ndimage", "tinytorch.core.im2col")
DEFAULT_FUNCTIONS = ("conv2d_loops", "max_pool2d_loops", "avg_pool2d_loops", "batch_norm2d_loops")
REASON = "{function} calls {names}: this module asks for loops"


@dataclass(frozen=True)
class Policy:
    forbidden: tuple = DEFAULT_FORBIDDEN     # modules (and calls) the graded functions may not use
    functions: tuple = DEFAULT_FUNCTIONS     # the graded loop functions
    on_use: str = "zero_cell"                # flag | zero_cell

    def digest(self) -> str:
        "Changes whenever the policy does (a graded result under another policy is stale)."
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:16]

    def forbids(self, dotted: str) -> str:
        "The forbidden entry `dotted` (a module or call path) falls under, or ''."
        for entry in self.forbidden:
            if dotted == entry or dotted.startswith(entry + "."):
                return entry
        return ""


def _names(text: str) -> tuple:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


def load_policy(root: Path) -> Policy:
    """The `[policy]` of `root/settings.ini`; the defaults when the section is absent; a bad value is
    an error naming the key, what it must be and what it was."""
    path = Path(root) / "settings.ini"
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    if not parser.has_section("policy"):
        return Policy()
    section = parser["policy"]
    on_use = section.get("on_use", Policy.on_use).strip()
    if on_use not in ON_USE:
        raise ValueError(f"{path}: [policy] on_use must be one of {' | '.join(ON_USE)}, got {on_use!r}")
    forbidden = _names(section.get("forbidden", ", ".join(DEFAULT_FORBIDDEN)))
    functions = _names(section.get("functions", ", ".join(DEFAULT_FUNCTIONS)))
    for key, values in (("forbidden", forbidden), ("functions", functions)):
        bad = [v for v in values if not all(part.isidentifier() for part in v.split("."))]
        if bad:
            raise ValueError(f"{path}: [policy] {key} must be dotted Python names separated by commas, got {bad}")
    if not functions:
        raise ValueError(f"{path}: [policy] functions names no function (expected e.g. {', '.join(DEFAULT_FUNCTIONS)})")
    return Policy(forbidden=forbidden, functions=functions, on_use=on_use)


# ---------------------------------------------------------------- the sandbox: forbidden modules are not there

_stub_lock = threading.Lock()
_stub_root: list = []


def _stub(module: str, package: bool) -> Path:
    "A read-only package folder (or module file) whose import raises ModuleNotFoundError for `module`."
    with _stub_lock:
        if not _stub_root:
            folder = Path(tempfile.mkdtemp(prefix="tinytorch-policy-"))
            atexit.register(shutil.rmtree, folder, True)
            os.chmod(folder, 0o755)
            _stub_root.append(folder)
        message = (f"{module} is not available to graded notebooks: the course's policy (settings.ini "
                   f"[policy]) forbids it, because this module asks for loops")
        code = f"raise ModuleNotFoundError({message!r}, name={module!r})\n"
        target = _stub_root[0] / (module if package else f"{module}.py")
        init = target / "__init__.py" if package else target
        if not init.exists():
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(code, encoding="utf-8")
            for path in (target, init):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return target


def _site_folders() -> list:
    "Every folder of installed packages inside what the sandbox mounts (venv, the Python installation, /usr)."
    folders = []
    for prefix in {sys.prefix, sys.base_prefix, "/usr", "/usr/local"}:
        for pattern in ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages"):
            folders += [Path(p).resolve() for p in glob.glob(os.path.join(prefix, pattern))]
    return sorted(set(f for f in folders if f.is_dir()))


def installed_locations(module: str) -> list:
    "(path, is_package) of each copy of `module` (dotted) on disk where a sandboxed kernel could find it."
    parts = module.split(".")
    found = []
    for folder in _site_folders():
        base = folder.joinpath(*parts)
        if base.is_dir():
            found.append((base, True))
        for candidate in [base.with_name(parts[-1] + ".py"), *base.parent.glob(parts[-1] + ".*.so")] \
                if base.parent.is_dir() else []:
            if candidate.is_file():
                found.append((candidate, False))
    return found


def bwrap_hiding(modules: tuple) -> list:
    """bwrap arguments that cover every installed copy of each of `modules` with a stub whose
    import raises ModuleNotFoundError (to come after the mounts of the folders holding them)."""
    args = []
    for module in modules:
        for path, package in installed_locations(module):
            stub = _stub(module, package) if package or path.suffix == ".py" else Path("/dev/null")
            args += ["--ro-bind", str(stub), str(path)]
    return args


# ---------------------------------------------------------------- the static scan

@dataclass
class Finding:
    "A forbidden module or call the student's code reaches: structured, rendered at the edge."
    function: str      # the graded function that reaches it ("" for code outside every graded function)
    names: list        # dotted names, in the order they appear
    via: list          # helper functions of the student's own it went through
    cells: list        # grade ids of the checks of `function`
    action: str = ""   # "flag" | "zero_cell" (what was done to `cells`), "" when outside graded functions

    @property
    def reason(self) -> str:
        shown = ", ".join(self.names[:3]) + (f" and {len(self.names) - 3} more" if len(self.names) > 3 else "")
        through = f" (through {', '.join(self.via)})" if self.via else ""
        return REASON.format(function=self.function, names=shown + through)

    def as_flag(self) -> dict:
        return {"kind": "library_use", "function": self.function, "names": list(self.names), "via": list(self.via),
                "cells": list(self.cells), "action": self.action}


def _strip_magics(text: str) -> str:
    "IPython lines (%magic, !shell) blanked, so the rest parses as Python."
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines())


def _dotted(node) -> str:
    "`a.b.c` of a Name/Attribute chain, or ''."
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _import_names(node) -> list:
    "[(bound name, dotted target)] of an import statement (a star import binds '*')."
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0]) for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [("*", node.module) if a.name == "*" else (a.asname or a.name, f"{node.module}.{a.name}")
                for a in node.names]
    return []


def _string_import(node) -> str:
    "The module of `importlib.import_module('x')` / `__import__('x')` with a constant name, or ''."
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        name = _dotted(node.func)
        if name in ("__import__", "importlib.import_module", "import_module"):
            return node.args[0].value
    return ""


class _Scope:
    "What one function (or the cells' top level) imports, calls and references."

    def __init__(self):
        self.aliases = {}     # bound name -> dotted target
        self.star = []        # modules star-imported
        self.uses = []        # (dotted name as written, is a call)
        self.imported = []    # dotted modules imported here
        self.calls = set()    # plain names called (helpers)


def _scan_body(nodes, scope: _Scope) -> None:
    for node in nodes:
        for sub in ast.walk(node):
            for bound, target in _import_names(sub):
                scope.imported.append(target)
                if bound == "*":
                    scope.star.append(target)
                else:
                    scope.aliases[bound] = target
            module = _string_import(sub)
            if module:
                scope.imported.append(module)
            if isinstance(sub, ast.Call):
                name = _dotted(sub.func)
                if name:
                    scope.uses.append((name, True))
                    if "." not in name:
                        scope.calls.add(name)
            elif isinstance(sub, ast.Attribute) and isinstance(getattr(sub, "ctx", None), ast.Load):
                name = _dotted(sub)
                if name:
                    scope.uses.append((name, False))
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                scope.uses.append((sub.id, False))


def _resolve(name: str, aliases: dict) -> str:
    head, _, rest = name.partition(".")
    if head not in aliases:
        return ""
    return aliases[head] + ("." + rest if rest else "")


def _forbidden_in(scope: _Scope, global_aliases: dict, global_star: list, policy: Policy,
                  known: frozenset = frozenset()) -> list:
    """Forbidden dotted names a scope reaches, calls first, in order, without repeats. A star
    import counts when the scope calls a plain name that nothing else (`known`, builtins) defines."""
    aliases = {**global_aliases, **scope.aliases}
    called, referenced = [], []
    for name, is_call in scope.uses:
        resolved = _resolve(name, aliases)
        if resolved and policy.forbids(resolved):
            (called if is_call else referenced).append(resolved)
    # The most specific call first (torch.nn.functional.conv2d before torch.from_numpy): it says the most.
    found = sorted(dict.fromkeys(called), key=lambda name: -name.count("."))
    # A module referenced but nothing of it called (e.g. `conv = F.conv2d; conv(x)`), an import, a star import.
    for resolved in referenced:
        if not any(c == resolved or c.startswith(resolved + ".") for c in found):
            found.append(resolved)
    unexplained = {name for name in scope.calls if name not in known and name not in aliases
                   and not hasattr(builtins, name)}
    for module in scope.imported + (global_star if unexplained else []):
        if policy.forbids(module) and not any(f == module or f.startswith(module + ".") for f in found):
            found.append(module)
    return list(dict.fromkeys(found))


def student_code(submission, source, release) -> list:
    """The code cells the student wrote: answer cells, added cells and edited instructor cells
    (restored test cells and unchanged released cells are the instructor's)."""
    from tito.grading.notebooks import cell_text, grade_id, is_restored
    restored = {grade_id(c) for c in source.cells if grade_id(c) and is_restored(c)}
    released = {cell_text(c).strip() for c in release.cells if c.get("cell_type") == "code"}
    texts = []
    for cell in submission.cells:
        if cell.get("cell_type") != "code":
            continue
        text = cell_text(cell)
        if grade_id(cell) in restored or text.strip() in released or not text.strip():
            continue
        texts.append(text)
    return texts


def _assigned(text: str) -> list:
    "The Name nodes `text` assigns, defines or imports at any depth (nothing when it does not parse)."
    try:
        tree = ast.parse(_strip_magics(text))
    except SyntaxError:
        return []
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(ast.Name(id=node.name, ctx=ast.Store()))
        for bound, _ in _import_names(node):
            if bound != "*":
                names.append(ast.Name(id=bound, ctx=ast.Store()))
    return names


def instructor_names(release) -> frozenset:
    "Every name the released notebook's code defines, assigns or imports."
    from tito.grading.notebooks import cell_text
    return frozenset(n.id for c in release.cells if c.get("cell_type") == "code" for n in _assigned(cell_text(c)))


def checks_of(source, functions) -> dict:
    "{function: [grade ids of the graded test cells that call it]} (hidden tests included)."
    from tito.grading.notebooks import cell_text, grade_id, is_graded, is_solution
    cells = {}
    for cell in source.cells:
        if cell.get("cell_type") != "code" or not is_graded(cell) or is_solution(cell) or not grade_id(cell):
            continue
        try:
            tree = ast.parse(_strip_magics(cell_text(cell)))
        except SyntaxError:
            continue
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        for function in functions:
            if function in used:
                cells.setdefault(function, []).append(grade_id(cell))
    return cells


def scan(texts: list, policy: Policy, checks: dict, known: frozenset = frozenset()) -> list:
    """Findings of the student's code `texts` (cells, in order): one per graded function that
    reaches something forbidden, and one (function '') for forbidden code elsewhere. `known`:
    names the instructor's cells define (a call to one of them is not a star-imported name)."""
    top = _Scope()
    functions = {}        # name -> [scope] (a cell may define a function again; every definition counts)
    for text in texts:
        try:
            tree = ast.parse(_strip_magics(text))
        except SyntaxError:
            continue   # a cell that does not parse runs nothing
        outside = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = _Scope()
                _scan_body(node.decorator_list + node.args.defaults + node.body, scope)
                functions.setdefault(node.name, []).append(scope)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(getattr(node, "value", None), ast.Lambda):
                # `conv2d_loops = lambda ...: F.conv2d(...)` defines the function too
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        scope = _Scope()
                        _scan_body([node.value], scope)
                        functions.setdefault(target.id, []).append(scope)
            else:
                outside.append(node)
        _scan_body(outside, top)
        # Module-level rebinding (`conv2d_loops = F.conv2d`, `F = torch.nn.functional`).
        for node in outside:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                value = _dotted(node.value)
                if value:
                    resolved = _resolve(value, top.aliases) or value
                    top.aliases[node.targets[0].id] = resolved
                    if node.targets[0].id in policy.functions and policy.forbids(resolved):
                        scope = _Scope()
                        scope.uses.append((value, True))
                        functions.setdefault(node.targets[0].id, []).append(scope)
    defined = frozenset(known) | set(functions) | {n.id for text in texts for n in _assigned(text)}
    findings, reached_by_graded = [], set()
    for function in policy.functions:
        names, via, seen, todo = [], [], {function}, [function]
        while todo:
            current = todo.pop(0)
            for scope in functions.get(current, []):
                found = _forbidden_in(scope, top.aliases, top.star, policy, defined)
                if found and current != function and current not in via:
                    via.append(current)
                names += [n for n in found if n not in names]
                for helper in sorted(scope.calls):
                    if helper in functions and helper not in seen and helper not in policy.functions:
                        seen.add(helper)
                        todo.append(helper)
        reached_by_graded |= seen
        if names:
            findings.append(Finding(function, names, via, list(checks.get(function, [])), policy.on_use))
    # Forbidden code the graded functions do not reach (a scratch cell comparing with torch): reported, not scored.
    elsewhere = []
    for name, scopes in functions.items():
        if name not in reached_by_graded:
            for scope in scopes:
                elsewhere += _forbidden_in(scope, top.aliases, top.star, policy, defined)
    top_found = _forbidden_in(top, top.aliases, [], policy)
    covered = [n for finding in findings for n in finding.names]
    elsewhere = [n for n in dict.fromkeys(elsewhere + top_found)
                 if not any(c == n or c.startswith(n + ".") for c in covered)]
    if elsewhere:
        findings.append(Finding("", elsewhere, [], [], ""))
    return findings


def apply(findings: list, points: dict, messages: dict) -> tuple:
    """Scores and messages after the policy: each finding's reason comes first among its cells'
    messages, and under `zero_cell` those cells earn nothing. Returns new (points, messages)."""
    points, messages = dict(points), {gid: list(reasons) for gid, reasons in messages.items()}
    for finding in findings:
        if not finding.function:
            continue
        for gid in finding.cells:
            if gid not in points:
                continue
            messages[gid] = [finding.reason] + [r for r in messages.get(gid, []) if r != finding.reason]
            if finding.action == "zero_cell":
                points[gid] = 0.0
    return points, messages


_checks_cache = {}


def check_submission(submission, assignment, policy: Policy) -> list:
    "The findings of one submission (read with notebooks.read_submission) against the assignment."
    key = (assignment.source_hash, policy.functions)
    if key not in _checks_cache:   # the same for every student: parse the source's checks and names once
        _checks_cache[key] = (checks_of(assignment.source, policy.functions), instructor_names(assignment.release))
    checks, known = _checks_cache[key]
    return scan(student_code(submission, assignment.source, assignment.release), policy, checks, known)
