"""The "Common mistakes" table at the end of nbs/09_spatial.ipynb says, for each typical bug, which
checks catch it. Here every row is made: its bug is one text edit of the reference solution, the
notebook's cells run in-process up to the graded cells the row names, and every check the row
names must fail (and the reference must pass them all)."""
import contextlib
import io
import json
import re
from pathlib import Path

import pytest

import tinytorch.checks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "09_spatial.ipynb"

# row (the table's first column, as written) -> (function, old text, new text)
BUGS = {
    "The window ignores the stride: `x_padded[b, in_ch, out_h + k_h, ...]`":
        ("conv2d_loops", "out_h * stride_h + k_h, out_w * stride_w + k_w", "out_h + k_h, out_w + k_w"),
    "The kernel flipped": ("conv2d_loops", "* weight[out_ch, in_ch, k_h, k_w])",
                           "* weight[out_ch, in_ch, kernel_h - 1 - k_h, kernel_w - 1 - k_w])"),
    "The bias added inside the kernel loops": ("conv2d_loops", "* weight[out_ch, in_ch, k_h, k_w])",
                                               "* weight[out_ch, in_ch, k_h, k_w] + (0.0 if bias is None else bias[out_ch]))"),
    "One channel index for both sides": ("conv2d_loops", "x_padded[b, in_ch,", "x_padded[b, out_ch % in_channels,"),
    "Reading `x` instead of `x_padded`": ("conv2d_loops", "(x_padded[b, in_ch,", "(x[b, in_ch,"),
    "Writing into the input": ("conv2d_loops", "                    total = 0.0\n",
                               "                    total = 0.0\n                    x[b, 0, 0, 0] += 0.5\n"),
    "A range one short": ("conv2d_loops", "for k_h in range(kernel_h):", "for k_h in range(kernel_h - 1):"),
    "The running max started at 0": ("max_pool2d_loops", "best = -np.inf", "best = 0.0"),
    "The window ignores the stride: `x_padded[b, ch, out_h + k_h, ...]`":
        ("max_pool2d_loops", "out_h * stride_h + k_h, out_w * stride_w + k_w", "out_h + k_h, out_w + k_w"),
    "The max taken over all channels": ("max_pool2d_loops", "best = max(best, x_padded[b, ch, out_h * stride_h + k_h, out_w * stride_w + k_w])",
                                        "best = max(best, x_padded[b, :, out_h * stride_h + k_h, out_w * stride_w + k_w].max())"),
    "Writing into the input (e.g. clipping `x` in place)": ("max_pool2d_loops", "                    best = -np.inf\n",
                                                            "                    best = -np.inf\n                    np.clip(x, -1e3, 1e3, out=x)\n                    x[b, ch, 0, 0] = min(x[b, ch, 0, 0], 0.0)\n"),
    "`total / kernel_h * kernel_w`": ("avg_pool2d_loops", "total / (kernel_h * kernel_w)", "total / kernel_h * kernel_w"),
    "Dividing by the values inside the image only": ("avg_pool2d_loops", "total / (kernel_h * kernel_w)",
        "total / ((min(out_h * stride_h + kernel_h, padding[0] + height) - max(out_h * stride_h, padding[0]))"
        " * (min(out_w * stride_w + kernel_w, padding[1] + width) - max(out_w * stride_w, padding[1])))"),
    "Averaging over channels": ("avg_pool2d_loops", "total += x_padded[b, ch,", "total += x_padded[b, :,"),
    "Statistics over the wrong axes": ("batch_norm2d_loops", "var = x.var(axis=(0, 2, 3))", "var = x.var(axis=(2, 3)).mean(axis=0)"),
    "Normalising with the unbiased variance": ("batch_norm2d_loops", "var = x.var(axis=(0, 2, 3))  ", "var = x.var(axis=(0, 2, 3), ddof=1)  "),
    "`momentum` on the wrong side": ("batch_norm2d_loops", "(1 - momentum) * running_mean + momentum * mean",
                                     "momentum * running_mean + (1 - momentum) * mean"),
    "`running_mean = ...` instead of `running_mean[...] = ...`": ("batch_norm2d_loops", "running_mean[...] =", "running_mean ="),
    "`eps` outside the square root": ("batch_norm2d_loops", "np.sqrt(var.reshape(1, channels, 1, 1) + eps)",
                                      "(np.sqrt(var.reshape(1, channels, 1, 1)) + eps)"),
    "`x -= mean`": ("batch_norm2d_loops", "    x_hat = (x - mean.reshape(1, channels, 1, 1))",
                    "    x -= mean.reshape(1, channels, 1, 1)\n    x_hat = (x)"),
    "Batch statistics in evaluation": ("batch_norm2d_loops", "mean, var = running_mean, running_var",
                                       "mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))"),
    "Running statistics updated in evaluation too": ("batch_norm2d_loops", "        mean, var = running_mean, running_var\n",
        "        mean, var = running_mean.copy(), running_var.copy()\n        running_mean[...] = 0.9 * running_mean + 0.1 * x.mean(axis=(0, 2, 3))\n"),
}


def cells():
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def table_rows() -> list:
    "(mistake, [check names]) for each row of the Common mistakes table; a name ending in … is a prefix."
    text = next(source(c) for c in cells() if source(c).startswith("## Common mistakes"))
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) != 3 or not parts[2] or parts[0] in ("Mistake", "---"):
            continue
        rows.append((parts[0], re.findall(r"`([a-z0-9_]+:[A-Za-z0-9_]+…?)`", parts[2])))
    return rows


def failing_checks(edit=None) -> set:
    """Run the notebook's code cells (demo cells skipped) with `edit` applied to one answer cell, up
    to the last graded cell; the names of the checks that failed."""
    failed = set()
    namespace = {"__name__": "__main__"}

    def collect():
        failed.update(name for name, _, _ in tinytorch.checks._failures)
        tinytorch.checks._failures.clear()
        tinytorch.checks._current.clear()

    for cell in cells():
        if cell["cell_type"] != "code" or "demo" in cell.get("metadata", {}).get("tags", []):
            continue
        text = "\n".join(l for l in source(cell).splitlines() if not l.startswith("#|"))
        if edit and f"def {edit[0]}(" in text:
            assert text.count(edit[1]) == 1, f"the edit {edit[1]!r} no longer applies to {edit[0]}"
            text = text.replace(edit[1], edit[2])
        text = text.replace("checks_passed()", "_collect_failures()")
        namespace["_collect_failures"] = collect
        code = compile(text, "<cell>", "exec")      # an edit that breaks the syntax fails here, loudly
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(code, namespace)
            except Exception as error:             # a set-up cell broken by the bug: the rest still runs
                failed.add(f"error: {type(error).__name__}")
    return failed


def matches(cited: str, failed: set) -> bool:
    return any(name.startswith(cited[:-1]) for name in failed) if cited.endswith("…") else cited in failed


def test_every_row_has_a_bug_and_names_checks():
    rows = table_rows()
    assert len(rows) >= 15
    assert {mistake for mistake, _ in rows} == {m for m in rows_bugs(rows)}, "each row of the table has its bug here"
    assert all(names for _, names in rows), "each row names the checks that catch it"


def rows_bugs(rows):
    return [mistake for mistake, _ in rows if any(mistake.startswith(key) for key in BUGS)]


@pytest.fixture(scope="module")
def reference_failures():
    return failing_checks()


def test_the_reference_passes_every_check(reference_failures):
    assert not reference_failures


@pytest.mark.parametrize("mistake", sorted(BUGS))
def test_each_mistake_is_caught_by_the_checks_the_table_names(mistake):
    cited = next(names for row, names in table_rows() if row.startswith(mistake))
    failed = failing_checks(BUGS[mistake])
    missed = [name for name in cited if not matches(name, failed)]
    assert not missed, f"{mistake}: the table names {missed}, but those pass; failing: {sorted(failed)}"
