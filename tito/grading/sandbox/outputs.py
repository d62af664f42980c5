"""What the grader keeps of a submission's output: at most `max_output_bytes` and `max_outputs`
in all (then a note says it was cut), error outputs always (tracebacks cut), streams merged and
tidied the way a terminal shows them."""
from __future__ import annotations

import json
import re

TRACEBACK_BYTES = 20_000   # an error output is always kept, but its traceback is cut to this
OUTPUT_OVERHEAD = 200      # bytes counted for every output on top of its payload (dicts, metadata)

_CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?!\n)")
_BACKSPACE = re.compile(r"[^\n]\x08")


class _OutputCaps:
    "The budget of one submission's outputs, spent by every cell in turn (`take`)."

    def __init__(self, limits):
        self.limits = limits
        self.output_budget = int(limits.max_output_bytes)
        self.outputs_left = int(limits.max_outputs)
        self.truncated = False
        self.cut_by_count = False
        self.display_ids = {}       # display_id -> outputs showing it
        self.clear_pending = False  # clear_output(wait=True): clear when the next output comes

    def start_cell(self):
        self.clear_pending = False

    def take(self, outputs: list, msg: dict) -> None:
        "Add what the iopub message `msg` shows to the cell's `outputs`, within the caps."
        from nbformat import ValidationError
        from nbformat.v4 import output_from_msg

        kind = msg["msg_type"]
        if kind == "clear_output":
            if msg["content"].get("wait"):
                self.clear_pending = True
            else:
                outputs.clear()
            return
        if kind == "update_display_data":
            self._update_display(msg["content"])
            return
        if kind not in ("stream", "display_data", "execute_result", "error"):
            return
        try:
            out = _stream(msg["content"]) if kind == "stream" else None
            out = out if out is not None else output_from_msg(msg)
        except (ValueError, KeyError, TypeError, ValidationError):
            return   # not an output nbformat can keep (a kernel's code can publish anything): dropped
        if self.clear_pending:
            self.clear_pending = False
            outputs.clear()
        if kind == "error":
            # Always kept (a grader needs to see the cell failed), but bounded.
            out["traceback"] = _cut_traceback(out.get("traceback", []))
            out["evalue"] = str(out.get("evalue", ""))[:2000]
            outputs.append(out)
            return
        if self.truncated:
            return
        if self.outputs_left <= 0:
            outputs.append(note(f"[output cut: this submission produced more than {int(self.limits.max_outputs):,} "
                                "outputs; the rest was discarded]\n"))
            self.truncated = self.cut_by_count = True
            return
        self.outputs_left -= 1
        size = output_size(out)
        if size > self.output_budget:
            if kind == "stream" and self.output_budget > 0:
                out["text"] = out["text"][:self.output_budget]
                _append(outputs, out)
            outputs.append(note(f"[output cut: this submission printed more than "
                                f"{int(self.limits.max_output_bytes):,} bytes; the rest was discarded]\n"))
            self.output_budget = 0
            self.truncated = True
            return
        self.output_budget -= size
        _append(outputs, out)
        display_id = msg["content"].get("transient", {}).get("display_id")
        if display_id:
            self.display_ids.setdefault(display_id, []).append(out)

    def _update_display(self, content: dict):
        for target in self.display_ids.get(content.get("transient", {}).get("display_id"), []):
            size = output_size(content)
            if size <= self.output_budget:
                self.output_budget -= size
                target["data"] = content.get("data", {})
                target["metadata"] = content.get("metadata", {})


def _stream(content: dict):
    """A stream output built directly when its two fields are what nbformat's schema asks for
    (`output_from_msg` validates each output against the whole schema: most of a cell's outputs
    are prints, and that was ~40 ms of the grader's CPU per submission); None otherwise."""
    from nbformat import NotebookNode
    name, text = content.get("name"), content.get("text")
    if name in ("stdout", "stderr") and isinstance(text, str):
        return NotebookNode(output_type="stream", name=name, text=text)
    return None


def _append(outputs, out):
    "Append `out`, merged into the last output when both are the same stream."
    if (out["output_type"] == "stream" and outputs and outputs[-1]["output_type"] == "stream"
            and outputs[-1]["name"] == out["name"]):
        outputs[-1]["text"] += out["text"]
    else:
        outputs.append(out)


def note(text: str, name: str = "stderr"):
    "A stream output the grader adds (a cut, a skipped cell)."
    from nbformat.v4 import new_output
    return new_output("stream", name=name, text=text)


def error_output(ename: str, evalue: str):
    "An error output the grader adds (a cell that did not finish, a failure without its error output)."
    from nbformat.v4 import new_output
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def output_size(out) -> int:
    "Bytes an output costs: its payload and what the grader holds for each output besides."
    if "text" in out:
        return len(out["text"].encode("utf-8", "replace")) + OUTPUT_OVERHEAD
    total = OUTPUT_OVERHEAD
    for value in (out.get("data") or {}).values():
        total += len(value if isinstance(value, str) else json.dumps(value))
    return total


def _cut_traceback(lines: list) -> list:
    kept, size = [], 0
    for line in reversed([str(l) for l in lines]):
        if size + len(line) > TRACEBACK_BYTES:
            kept.append("[... traceback cut ...]")
            break
        kept.append(line)
        size += len(line)
    return list(reversed(kept))


def tidy_streams(outputs):
    "Apply carriage returns and backspaces the way a terminal shows them (progress bars)."
    for out in outputs:
        if out["output_type"] == "stream" and ("\r" in out["text"] or "\x08" in out["text"]):
            text = _CARRIAGE_RETURN.sub("", out["text"])
            previous = None
            while previous != text:
                previous, text = text, _BACKSPACE.sub("", text)
            out["text"] = text
