"""tito's gradebook writer makes the rows nbgrader's own `add_submission` makes (the formgrader reads
them), in batches: a student graded by tito and one added by nbgrader look the same in gradebook.db,
and what a person scores there comes back as the manual score."""
import pytest
from nbgrader import api

from tito.grading.gradebook import Gradebook
from tito.grading.model import Result
from tito.grading.release import prepare_nbgrader

AUTO = [("conv", 10.0), ("pool", 5.0)]
WRITTEN = [("why", 2.0), ("tradeoff", 2.0)]


def make_course(folder):
    "A course with one assignment of two notebooks: grade cells, written answers, a solution and a task cell."
    prepare_nbgrader()
    gb = api.Gradebook(f"sqlite:///{folder / 'gradebook.db'}", "course")
    gb.add_assignment("09_spatial")
    for notebook in ("09_spatial", "extra"):
        gb.add_notebook(notebook, "09_spatial")
        for name, points in AUTO + WRITTEN:
            gb.add_grade_cell(f"{name}" if notebook == "09_spatial" else f"{notebook}_{name}", notebook, "09_spatial",
                              max_score=points, cell_type="code" if (name, points) in AUTO else "markdown")
        gb.add_solution_cell(f"{notebook}_solution", notebook, "09_spatial")
        gb.add_task_cell(f"{notebook}_task", notebook, "09_spatial", max_score=1.0, cell_type="markdown")
    return gb


def rows_of(db, student):
    "What gradebook.db holds of `student`'s submission: per notebook, its grade and comment cells."
    submission = db.query(api.SubmittedAssignment).filter_by(student_id=student).one()
    return {nb.notebook.name: (sorted(g.cell.name for g in nb.grades), sorted(c.cell.name for c in nb.comments))
            for nb in submission.notebooks}


@pytest.mark.filterwarnings("ignore:Object of type:sqlalchemy.exc.SAWarning")   # nbgrader's own add_submission
def test_a_graded_student_has_the_rows_nbgrader_makes_and_a_regrade_updates_them(tmp_path):
    theirs = make_course(tmp_path)
    theirs.add_student("by_nbgrader")
    theirs.add_submission("09_spatial", "by_nbgrader")
    ours = Gradebook(tmp_path, "09_spatial", "09_spatial.ipynb", "course", WRITTEN)
    ours.write(Result("by_tito", "graded", 12.0, 19.0, "", cells={"conv": 10.0, "pool": 2.0}, blank_answers=["why"]))
    ours.write(Result("other", "graded", 0.0, 19.0, "", cells={"conv": 0.0, "pool": 0.0}))
    ours.commit()
    db = theirs.db
    assert rows_of(db, "by_tito") == rows_of(db, "by_nbgrader") == rows_of(db, "other")
    assert theirs.find_submission_notebook("09_spatial", "09_spatial", "by_tito").code_score == 12.0
    why = theirs.find_grade("why", "09_spatial", "09_spatial", "by_tito")
    tradeoff = theirs.find_grade("tradeoff", "09_spatial", "09_spatial", "by_tito")
    assert (why.auto_score, why.needs_manual_grade) == (0.0, False)        # left blank: 0, nobody needs to read it
    assert (tradeoff.auto_score, tradeoff.needs_manual_grade) == (None, True)

    tradeoff.manual_score = 1.5   # a person grades it in the formgrader
    db.commit()
    ours.write(Result("by_tito", "graded", 15.0, 19.0, "", cells={"conv": 10.0, "pool": 5.0}, blank_answers=["why"]))
    ours.commit()
    db.expire_all()
    assert rows_of(db, "by_tito") == rows_of(db, "by_nbgrader")
    assert db.query(api.SubmittedAssignment).filter_by(student_id="by_tito").count() == 1
    assert theirs.find_submission_notebook("09_spatial", "09_spatial", "by_tito").code_score == 15.0
    manual = ours.manual("by_tito")
    assert (manual.score, manual.pending) == (1.5, 0.0)
    assert (ours.manual("other").score, ours.manual("other").pending) == (0.0, 4.0)
    assert ours.manual("never_graded").pending == 4.0
    ours.close()
    theirs.close()


def test_rows_staged_but_not_committed_are_not_in_the_gradebook(tmp_path):
    make_course(tmp_path).close()
    ours = Gradebook(tmp_path, "09_spatial", "09_spatial.ipynb", "course", WRITTEN)
    ours.write(Result("kept", "graded", 1.0, 19.0, "", cells={"conv": 1.0, "pool": 0.0}))
    ours.commit()
    ours.write(Result("lost", "graded", 1.0, 19.0, "", cells={"conv": 1.0, "pool": 0.0}))
    ours.write(Result("nothing", "missing", 0.0, 19.0, "", cells={}))   # no submission row, as in nbgrader
    assert ours.staged == 1
    ours.close()   # the grader was killed before the next commit
    reader = api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", "course")
    assert [s.student_id for s in reader.db.query(api.SubmittedAssignment)] == ["kept"]
    reader.close()
