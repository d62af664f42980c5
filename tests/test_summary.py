"""The instructor's class summary, from a grades.csv written here by hand."""
import pytest

from tito.grading.summary import format_summary, save_histogram, summarise

CSV = """student_id,score,max_score,status,detail,conv,pool,bn
ada,60,60,graded,,20,20,20
bob,40,60,graded,"max-pool of an all-negative window returned 0: start the running max at -np.inf [pool]",20,0,20
cyd,20,60,graded,"max-pool of an all-negative window returned 0: start the running max at -np.inf [pool]; running stats never updated [bn]",20,0,0
dee,0,60,invalid,the notebook is not valid JSON (line 3),0,0,0
eve,0,60,missing,no notebook 09_spatial.ipynb in eve/,0,0,0
"""


@pytest.fixture
def grades(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text(CSV)
    return path


def test_numbers_histogram_and_hardest_checks(grades):
    summary = summarise(grades, {"conv": 20, "pool": 20, "bn": 20})
    assert summary.students == 5 and summary.max_score == 60
    assert summary.mean == pytest.approx(24.0) and summary.median == 20
    assert summary.histogram() == [2, 0, 0, 1, 0, 0, 1, 0, 0, 1]   # 0, 0 | 20 | 40 | 60 (full marks in the last bin)
    assert [(c.grade_id, c.missed) for c in summary.cells] == [("pool", 3), ("bn", 2), ("conv", 1)]
    assert summary.concepts[0] == ("max-pool of an all-negative window returned 0: start the running max at -np.inf", 2)
    assert ("running stats never updated", 1) in summary.concepts


def test_text_summary_names_what_the_class_struggled_with(grades):
    text = format_summary(summarise(grades, {"conv": 20, "pool": 20, "bn": 20}))
    assert text.splitlines()[0] == ("5 students: mean 24.0/60, median 20/60; 3 graded, 1 invalid, 1 missing")
    assert "pool                 missed by 3/4, mean 5.0/20" in text
    assert "  2 × max-pool of an all-negative window returned 0" in text


def test_histogram_png_is_written(grades, tmp_path):
    png = save_histogram(summarise(grades), tmp_path / "plots" / "scores.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_concepts_stay_whole_and_notes_are_not_concepts():
    from tito.grading.summary import concepts_of
    detail = ("sandbox off; edited test cells restored: conv; cell 3 ran past the 10 s limit and was interrupted; "
              "2x2 average pooling: (0+1+4+5)/4 = 2.5; stride defaults to the kernel size [avg, pool]; "
              "bias added once [conv]")
    assert concepts_of(detail) == ["2x2 average pooling: (0+1+4+5)/4 = 2.5; stride defaults to the kernel size",
                                   "bias added once"]
    assert concepts_of("not JSON (line 3, column 1: Expecting value)") == []


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `tito grade` first"):
        summarise(tmp_path / "nothing.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,points\nada,3\n")
    with pytest.raises(ValueError, match=r"expected columns \['student_id', 'score'"):
        summarise(wrong)


def test_the_term_columns_are_not_cells_and_late_and_written_answers_are_counted(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text(
        "student_id,score,max_score,status,detail,raw_score,late,late_by_hours,penalty,manual_score,needs_manual,"
        "submission_sha256,tests_sha256,conv\n"
        "ada,54,66,graded,,60,late,26.5,6,0,6,aa,bb,60\n"
        "bob,0,66,graded,,60,too_late,100,60,0,0,cc,bb,60\n"
        "cyd,62,66,graded,,62,on_time,,0,2,4,dd,bb,60\n")
    summary = summarise(path)
    assert [c.grade_id for c in summary.cells] == ["conv"]
    assert summary.late == {"late": 1, "too_late": 1, "on_time": 1} and summary.needs_manual == 2
    text = format_summary(summary)
    assert "deadline: 1 on time, 1 late, 1 too late" in text
    assert "written answers: 2 students still to grade by hand" in text


def test_concepts_come_from_the_results_not_from_the_wording_of_detail(grades, tmp_path):
    "A note the text parser has never seen (a reworded or new one) does not become part of a concept."
    from tito.grading import journal
    from tito.grading.model import STATE, Result
    reworded = tmp_path / "course" / "grades.csv"
    reworded.parent.mkdir()
    reworded.write_text(CSV.replace('"max-pool of an all-negative', '"a note worded as never before; max-pool of an all-negative'))
    assert summarise(reworded).concepts[0][0].startswith("a note worded as never before")   # text alone: fooled
    results = [Result("bob", "graded", 40, 60, "", messages={"pool": ["max-pool of an all-negative window returned 0"]}),
               Result("cyd", "graded", 20, 60, "", messages={"pool": ["max-pool of an all-negative window returned 0"],
                                                            "bn": ["running stats never updated", "and more"]})]
    from_results = summarise(reworded, results=results).concepts
    assert from_results == [("max-pool of an all-negative window returned 0", 2), ("running stats never updated", 1)]
    for result in results:   # the journal tito grade leaves beside grades.csv says the same
        journal.save(reworded.parent / STATE, result)
    assert summarise(reworded).concepts == from_results
