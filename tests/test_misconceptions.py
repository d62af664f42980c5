"""The misconception library (misconceptions/09_spatial.json): every entry still applies to the
source and is caught by the hidden checks, and a student's wrong records are named by the entry
that prints the same. (That every buggy sample's detail names its misconception is asserted by
tests/test_grading.py through expected_grades.json.)"""
import json

import nbformat
import numpy as np
import pytest

from student_notebooks import ROOT
from tito.grading.misconceptions import Misconception, MisconceptionError, load, name_them, variant_records
from tinytorch.record import Record
from tito.grading.scoring import record_matches

SOURCE = ROOT / "source" / "09_spatial" / "09_spatial.ipynb"


def test_every_misconception_applies_to_the_source_and_the_checks_catch_it():
    library = load(ROOT, "09_spatial")
    assert len(library) >= 12 and len({m.id for m in library}) == len(library)
    assert all(m.explanation.startswith("misconception: ") and len(m.explanation) > 60 for m in library)
    source = nbformat.read(SOURCE, as_version=4)
    variants = variant_records(source, library)
    from tito.grading.mutation import _Worker
    worker = _Worker(json.loads(json.dumps(source)), 20, verdict="records")
    reference = dict(zip(worker.graded_ids, (g[2] for g in worker.graded)))
    for misconception in library:
        cells = variants[misconception.id]
        wrong = [(gid, name) for gid, recs in reference.items() for name, rec in recs.items()
                 if not record_matches(rec, cells[gid].get(name))]
        assert wrong, f"{misconception.id}: no hidden or visible check catches it"
        # and a student who writes exactly this bug is told so
        named = name_them(cells, reference, variants, library)
        assert any(misconception.explanation in explanations for explanations in named.values()), misconception.id


def record(*values):
    return Record(np.array(values, dtype=np.float64), "idea")


def test_a_wrong_record_is_named_only_when_a_variant_printed_the_same():
    reference = {"cell": {"cell:a": record(1.0, 2.0), "cell:b": record(3.0)}}
    variants = {"zero": {"cell": {"cell:a": record(0.0, 2.0), "cell:b": record(3.0)}}}
    library = [Misconception("zero", "f", (), "misconception: started at zero")]
    assert name_them({"cell": {"cell:a": record(0.0, 2.0), "cell:b": record(3.0)}}, reference, variants, library) == \
        {"cell": ["misconception: started at zero"]}
    assert name_them({"cell": {"cell:a": record(5.0, 2.0), "cell:b": record(3.0)}}, reference, variants, library) == {}
    # a second wrong record the variant does not explain: not that misconception
    assert name_them({"cell": {"cell:a": record(0.0, 2.0), "cell:b": record(4.0)}}, reference, variants, library) == {}
    assert name_them({"cell": {"cell:a": record(1.0, 2.0), "cell:b": record(3.0)}}, reference, variants, library) == {}


def test_a_library_that_no_longer_fits_the_source_says_which_entry(tmp_path):
    (tmp_path / "misconceptions").mkdir()
    (tmp_path / "misconceptions" / "09_spatial.json").write_text(json.dumps([
        {"id": "gone", "function": "max_pool2d_loops", "edits": [["best = -1e9", "best = 0"]], "explanation": "x"}]))
    library = load(tmp_path, "09_spatial")
    with pytest.raises(MisconceptionError, match="misconception gone: expected 'best = -1e9' once in max_pool2d_loops"):
        variant_records(nbformat.read(SOURCE, as_version=4), library)
    (tmp_path / "misconceptions" / "09_spatial.json").write_text('[{"id": 1}]')
    with pytest.raises(MisconceptionError, match="expected a list of"):
        load(tmp_path, "09_spatial")
