"""The course's nbgrader gradebook (gradebook.db), which nbgrader's formgrader opens: one row per
submission with a grade per graded cell, and the scores a person gives the written answers.

Written by one thread. Rows are staged with `write` and made durable by `commit`, which the batch
calls at once for a result a kernel ran for and once per batch for results that cost nothing (a
commit is an fsync of the whole database: per submission it was most of a large class's bookkeeping). A new submission's rows mirror nbgrader's own
`Gradebook.add_submission` (a submitted notebook per notebook, a grade per grade cell and task
cell, a comment per solution cell and task cell), written with nbgrader's ORM classes in the
batch's transaction instead of one commit per student and per submission.
"""
import warnings
from pathlib import Path

from tito.grading.term import Manual


class Gradebook:
    "gradebook.db of one assignment (one notebook), for the batch that grades it."

    def __init__(self, course: Path, module: str, notebook: str, course_id: str, manual: list = ()):
        from nbgrader import api
        from tito.grading.release import prepare_nbgrader
        prepare_nbgrader()
        self.api = api
        self.module, self.notebook, self.manual_cells = module, Path(notebook).stem, list(manual)
        self.gb = api.Gradebook(f"sqlite:///{Path(course).resolve() / 'gradebook.db'}", course_id)
        self.db = self.gb.db
        self.assignment = self.gb.find_assignment(module)
        # what add_submission mirrors, read once: (id, name, [(grade cell id, name)], [solution cell id], [task cell id])
        self.layout = [(nb.id, nb.name, [(c.id, c.name) for c in nb.grade_cells], [c.id for c in nb.solution_cells],
                        [c.id for c in nb.task_cells]) for nb in self.assignment.notebooks]
        self._read_who_is_there()
        self.staged = 0
        self._manual = None   # {(student, cell name): (manual_score, auto_score, needs_manual_grade)}, read once

    def write(self, result) -> None:
        "Stage `result`'s row (nothing for a missing notebook: no submission, as in nbgrader); `commit` keeps it."
        if result.status == "missing":
            return
        try:
            with warnings.catch_warnings():
                # nbgrader's ORM relationships trip SQLAlchemy autoflush warnings on new rows.
                warnings.simplefilter("ignore")
                self._stage(result)
        except Exception:
            self.rollback()
            raise
        self.staged += 1

    def commit(self) -> None:
        if self.staged:
            try:
                self.db.commit()
            except Exception:
                self.rollback()
                raise
        self.staged = 0

    def rollback(self) -> None:
        "Forget what was staged (the journal has none of it, so a rerun grades those again)."
        self.db.rollback()
        self.staged = 0
        self._read_who_is_there()

    def _read_who_is_there(self) -> None:
        "The students the gradebook knows, and those with a submission of this assignment."
        api = self.api
        self.students = {row[0] for row in self.db.query(api.Student.id)}
        self.submitted = {row[0] for row in self.db.query(api.SubmittedAssignment.student_id)
                          .filter(api.SubmittedAssignment.assignment_id == self.assignment.id)}

    def _stage(self, result) -> None:
        grades = self._new_submission(result.student) if result.student not in self.submitted \
            else self._grades_of(result.student)
        for gid, score in result.cells.items():
            grade = grades[gid]
            grade.auto_score = score
            grade.needs_manual_grade = grade.manual_score is not None   # as nbgrader's autograde marks it
        for gid, _ in self.manual_cells:   # a written answer waits for a person until one has scored it
            grade = grades[gid]
            blank = gid in result.blank_answers or result.status == "invalid"   # nothing to read: 0
            grade.auto_score = 0.0 if blank else None
            grade.needs_manual_grade = grade.manual_score is None and not blank

    def _new_submission(self, student: str) -> dict:
        """The rows nbgrader's add_submission makes, built apart from the session and then added
        (so that no autoflush sees half of them); {grade cell name: Grade} of this notebook."""
        api = self.api
        if student not in self.students:
            self.db.add(api.Student(id=student))
            self.students.add(student)
        submission = api.SubmittedAssignment(assignment_id=self.assignment.id, student_id=student)
        grades = {}
        for notebook_id, name, grade_cells, comment_cells, task_cells in self.layout:
            nb = api.SubmittedNotebook(notebook_id=notebook_id, assignment=submission)
            for cell_id, cell_name in grade_cells:
                grade = api.Grade(cell_id=cell_id, notebook=nb)
                if name == self.notebook:
                    grades[cell_name] = grade
            for cell_id in comment_cells + task_cells:
                api.Comment(cell_id=cell_id, notebook=nb)
            for cell_id in task_cells:
                api.Grade(cell_id=cell_id, notebook=nb)
        self.db.add(submission)
        self.submitted.add(student)
        return grades

    def _grades_query(self, *columns):
        "A query of `columns` over the grades of this assignment's notebook, every student's."
        api = self.api
        return (self.db.query(*columns).select_from(api.Grade)
                .join(api.BaseCell, api.Grade.cell_id == api.BaseCell.id)
                .join(api.SubmittedNotebook, api.Grade.notebook_id == api.SubmittedNotebook.id)
                .join(api.Notebook, api.SubmittedNotebook.notebook_id == api.Notebook.id)
                .join(api.SubmittedAssignment, api.SubmittedNotebook.assignment_id == api.SubmittedAssignment.id)
                .filter(api.SubmittedAssignment.assignment_id == self.assignment.id, api.Notebook.name == self.notebook))

    def _grades_of(self, student: str) -> dict:
        "{grade cell name: Grade} of `student`'s submitted notebook, in one query."
        api = self.api
        rows = self._grades_query(api.Grade, api.BaseCell.name).filter(api.SubmittedAssignment.student_id == student)
        return {name: grade for grade, name in rows}

    def manual(self, student: str) -> Manual:
        "The points a person gave `student`'s written answers in nbgrader's formgrader, and what still waits."
        if self._manual is None:
            self._manual = self._manual_grades()
        given, waiting = [], []
        for gid, points in self.manual_cells:
            found = self._manual.get((student, gid))
            if found is None:
                waiting.append(points)
                continue
            manual_score, auto_score, needs_manual = found
            if manual_score is None and needs_manual:
                waiting.append(points)
            else:   # a person's score, or 0 for an answer left blank (nbgrader's "No response")
                given.append(float(manual_score if manual_score is not None else auto_score or 0.0))
        return Manual(score=round(sum(given), 2), pending=sum(waiting))

    def _manual_grades(self) -> dict:
        "Every student's grades of the written answers, in one query (read after the last commit)."
        api = self.api
        names = [gid for gid, _ in self.manual_cells]
        rows = self._grades_query(api.SubmittedAssignment.student_id, api.BaseCell.name, api.Grade.manual_score,
                                  api.Grade.auto_score, api.Grade.needs_manual_grade).filter(api.BaseCell.name.in_(names))
        return {(student, name): (manual, auto, needs) for student, name, manual, auto, needs in rows}

    def close(self) -> None:
        self.gb.close()
