"""The record protocol between a hidden check and the grader.

A hidden check runs the student's code on fixed inputs inside the grading kernel and calls
`record(name, value, concept)`. That prints one marker line holding `value` as a plain float64
array. The grader never trusts the kernel's verdict: it reads these lines from the executed
notebook and compares them, in its own process, with the records of the reference solution
run on the same inputs. A student who patches asserts, numpy or this function can at most
print arrays, and the arrays must be right.

The `concept` shown to the student comes from the reference run, never from the submission.
"""
import base64
import json
from typing import NamedTuple

import numpy as np

MARKER = "@@tinytorch-record@@"


def as_plain_float64(value) -> np.ndarray:
    "`value` (a Tensor, an ndarray, a number, nested lists) as a fresh base-class float64 ndarray."
    data = getattr(value, "data", value)
    return np.array(np.asarray(data, dtype=np.float64), dtype=np.float64, copy=True, subok=False)


def encode_record(name: str, value, concept: str, points: float | None = None) -> str:
    "The marker line for one record (`points`: the check's own share of its cell, when it names one)."
    array = as_plain_float64(value)
    payload = {"name": name, "shape": list(array.shape), "concept": concept,
               "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")}
    if points is not None:
        payload["points"] = float(points)
    return MARKER + json.dumps(payload, separators=(",", ":"))


def record(name: str, value, concept: str, points: float | None = None) -> None:
    "Print `value` for the grader under `name`; `concept` says what a mismatch means, in a student's words."
    print(encode_record(name, value, concept, points), flush=True)


class Record(NamedTuple):
    "One record as the grader reads it."
    value: np.ndarray
    concept: str
    points: float | None = None    # the check's own share of its cell, when it names one
    repeated: bool = False         # the name was printed more than once (never by an honest run)


def decode_records(text: str) -> dict:
    "Every record in `text` (a cell's printed output), by name: {name: Record}. Bad lines are skipped."
    records = {}
    for line in text.splitlines():
        start = line.find(MARKER)
        if start < 0:
            continue
        try:
            payload = json.loads(line[start + len(MARKER):])
            array = np.frombuffer(base64.b64decode(payload["data"], validate=True), dtype=np.float64)
            name = str(payload["name"])
            points = payload.get("points")
            records[name] = Record(array.reshape(tuple(int(s) for s in payload["shape"])).copy(),
                                   str(payload.get("concept", "")),
                                   None if points is None else float(points), name in records)
        except (ValueError, KeyError, TypeError):
            continue
    return records
