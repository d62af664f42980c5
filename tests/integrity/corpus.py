"""A corpus for the similarity check, built from the sample class: copies disguised the ways
students disguise them, and the honest, independently written submissions they must not be
confused with. Each disguise is a plain text edit of a submission's answer cells."""
import copy
import io
import json
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "submissions" / "submitted"
MODULE, NOTEBOOK = "09_spatial", "09_spatial.ipynb"

# Local names of the answer regions, and what a copier renames them to.
RENAMES = {"b": "img", "out_ch": "f", "in_ch": "c", "out_h": "row", "out_w": "col", "k_h": "di", "k_w": "dj",
           "total": "acc", "best": "biggest", "mean": "mu", "var": "sigma2", "x_hat": "normed", "ch": "chan",
           "n": "img", "i": "row", "j": "col", "r0": "top", "c0": "left", "patch": "region", "oc": "f",
           "window": "win", "rows": "nr", "cols": "nc", "batch_mean": "bm", "batch_var": "bv",
           "use_mean": "m", "use_var": "v", "top": "t0", "left": "l0", "values": "vals", "seen": "strip"}


def load(student: str) -> dict:
    return json.loads((SAMPLES / student / MODULE / NOTEBOOK).read_text(encoding="utf-8"))


def answer_cells(nb: dict) -> list:
    return [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")
            and "def " in "".join(c["source"])]


def _each_answer(nb: dict, change) -> dict:
    nb = copy.deepcopy(nb)
    for cell in answer_cells(nb):
        cell["source"] = change("".join(cell["source"]))
    return nb


def rename(nb: dict) -> dict:
    "Every local name of the answers renamed (names only: strings, comments, attributes, keywords untouched)."
    def change(text):
        out, depth, previous = [], 0, None
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        for index, tok in enumerate(tokens):
            following = tokens[index + 1].string if index + 1 < len(tokens) else ""
            keyword_argument = depth > 0 and following == "=" and previous in ("(", ",")
            if tok.type == tokenize.NAME and tok.string in RENAMES and previous != "." and not keyword_argument:
                tok = tok._replace(string=RENAMES[tok.string])
            if tok.type == tokenize.OP:
                depth += tok.string in "([{" and 1 or (-1 if tok.string in ")]}" else 0)
            if tok.type not in (tokenize.NL, tokenize.COMMENT):
                previous = tok.string
            out.append(tok)
        return tokenize.untokenize(out)
    return _each_answer(nb, change)


def _swap_neighbours(text: str, swap) -> str:
    "`text` with each pair of neighbouring lines for which `swap(first, second)` gives new lines replaced by them."
    lines = text.splitlines()
    index = 0
    while index + 1 < len(lines):
        swapped = swap(lines[index], lines[index + 1])
        if swapped:
            lines[index], lines[index + 1] = swapped
            index += 2
        else:
            index += 1
    return "\n".join(lines)


ASSIGNMENT = re.compile(r"^(\s+)(\w+)(\[.*\])? *[-+*/]?= ")
LOOP = re.compile(r"^(\s*)for \w+ in range\(\w+\):$")


def _independent(first: str, second: str):
    "The two assignments swapped, when neither uses what the other assigns."
    one, two = ASSIGNMENT.match(first), ASSIGNMENT.match(second)
    if one and two and one.group(1) == two.group(1) and one.group(2) != two.group(2) \
            and not re.search(rf"\b{one.group(2)}\b", second.split("=", 1)[1]) \
            and not re.search(rf"\b{two.group(2)}\b", first.split("=", 1)[1]) \
            and "out = np." not in first + second:
        return second, first
    return None


def _nested_loops(first: str, second: str):
    "Two perfectly nested loops with their headers exchanged."
    one, two = LOOP.match(first), LOOP.match(second)
    if one and two:
        return one.group(1) + second.strip(), two.group(1) + first.strip()
    return None


def reorder(nb: dict) -> dict:
    "Independent neighbouring statements swapped (assignments whose names the other does not use)."
    return _each_answer(nb, lambda text: _swap_neighbours(text, _independent))


def comment_and_pad(nb: dict) -> dict:
    "A comment above every loop, a docstring-like string and dead code after every other statement."
    def change(text):
        out = []
        for number, line in enumerate(text.splitlines()):
            indent = line[:len(line) - len(line.lstrip())]
            stripped = line.strip()
            if stripped.startswith("for "):
                out.append(f"{indent}# loop over {stripped.split()[1]} (my own idea)")
            out.append(line)
            if number % 2 and stripped and not stripped.startswith(("def ", "return", "if ", "else", "for ", "#",
                                                                     "x = ", "\"")) \
                    and not stripped.endswith((":", "(", ",", "\\")) and line.startswith("    ") \
                    and stripped.count("(") == stripped.count(")") and stripped.count("[") == stripped.count("]"):
                out.append(f"{indent}unused_{number} = {number} * 0  # not needed")
                out.append(f"{indent}if False:")
                out.append(f"{indent}    print('debugging', {number})")
        return "\n".join(out)
    return _each_answer(nb, change)


def loop_order(nb: dict) -> dict:
    "Perfectly nested loops exchanged, pair by pair (the headers trade places, the bodies stay)."
    return _each_answer(nb, lambda text: _swap_neighbours(text, _nested_loops))


def everything(nb: dict) -> dict:
    return comment_and_pad(loop_order(reorder(rename(nb))))


DISGUISES = {"renamed": rename, "reordered": reorder, "commented_and_padded": comment_and_pad,
             "loop_order": loop_order, "all_at_once": everything}
# Submissions written independently of each other, and copies of which must be found.
ORIGINALS = ("reference", "correct_other_loop_order", "integrity_copy_original")
# Independently written (in the parts they wrote themselves) and the untouched handout: never a pair.
HONEST = ("reference", "correct_vectorised", "correct_other_loop_order", "correct_float64_accumulate",
          "integrity_copy_original", "untouched_release")


def write_corpus(folder: Path) -> dict:
    """Write every disguised copy of every original, and the honest submissions, into `folder`
    (nbgrader layout). Returns {copy: original}."""
    copies = {}
    for student in set(ORIGINALS) | set(HONEST):
        _write(folder, student, load(student))
    for original in ORIGINALS:
        for name, disguise in DISGUISES.items():
            copy_name = f"copy_{name}_of_{original}"
            _write(folder, copy_name, disguise(load(original)))
            copies[copy_name] = original
    return copies


def _write(folder: Path, student: str, nb: dict) -> None:
    path = Path(folder) / student / MODULE / NOTEBOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
