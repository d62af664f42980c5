"""How strong are the hidden tests of Module 09? Every single-point mutant of the solution
regions is judged by the records alone (asserts stripped, as if a student had disabled them):
at least 95 % of the mutants that are not shown equivalent (tests/equivalent_mutants.json, each
with its reason) must be killed. A mutant the records kill, the grader kills too: `tito grade`
fails a cell on a wrong record whether or not its asserts ran."""
import json
from pathlib import Path

from tito.grading.mutation import generate_mutants, load_equivalent, run_mutants

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "09_spatial.ipynb"
EQUIVALENT = ROOT / "tests" / "equivalent_mutants.json"
THRESHOLD = 0.95


def test_every_equivalent_mutant_is_still_generated_and_explained():
    equivalent = load_equivalent(EQUIVALENT)
    keys = {m.key for m in generate_mutants(json.loads(NOTEBOOK.read_text()))}
    stale = sorted(set(equivalent) - keys)
    assert not stale, f"equivalent_mutants.json lists mutants that no longer exist: {stale}"
    unexplained = [k for k, why in equivalent.items() if len(why.strip()) < 20]
    assert not unexplained, f"say why each of these is equivalent: {unexplained}"


def test_hidden_records_kill_at_least_95_percent_of_mutants():
    report = run_mutants(NOTEBOOK, jobs=2, progress=False, verdict="records")
    equivalent = load_equivalent(EQUIVALENT)
    survivors = [m for m in report.survivors() if m.key not in equivalent]
    judged = len(report.outcomes) - (len(report.survivors()) - len(survivors))
    assert judged >= 100, f"only {judged} mutants: are the solution regions marked?"
    killed = (judged - len(survivors)) / judged
    listing = "\n".join(f"  {m.key}  (cell {m.cell}, line {m.line})" for m in survivors)
    assert killed >= THRESHOLD, (
        f"hidden tests killed {killed:.1%} of {judged} mutants (need {THRESHOLD:.0%}); survivors:\n{listing}")
