"""Into and out of the systems a course already uses.

In: a Canvas "Download Submissions" zip (or the folder it unpacks to). Canvas names every file
`<name>_[LATE_]<user id>_<attachment id>_<file name as uploaded>` (lib/content_zipper.rb:
`get_filename` joins the student's sortable name, lower-cased with everything but word characters
removed, "LATE" when the submission is late, and the user id, or `anon_<id>` for an anonymous
assignment; `sanitize_user_name` removes `_<digits>_` from names because Canvas itself finds the ids
with `/_\\d+_/`). A re-uploaded file of the same name gets `-1`, `-2`, ... before its extension
(`Attachment.make_unique_filename`), and attachment ids grow with time, so of one student's
notebooks the one with the largest attachment id is the latest.

Out: from `grades.csv`, read by column name --
- `canvas_import`: the instructor's exported Canvas gradebook with one assignment's column filled, in
  the form Canvas's GradebookImporter reads back (first row the header "Student, ID, [SIS User ID,
  SIS Login ID,] Section, <assignment (id)>...", a row starting "Points Possible", students matched by
  their Canvas ID; a blank cell is "no change" there, so unknown and ungraded students keep
  what the gradebook held);
- `gradescope_csv`, `moodle_csv`: one row per graded student (Moodle's CSV import treats a blank
  grade as "no grade" and aborts on an unknown user, so students without a submission are left out
  and listed);
- `json_export`: every row, per-check results and provenance, for other tools.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tito.grading.intake import atomic_write, member_problem
from tito.grading.model import spreadsheet_safe

# name (optional for anonymous assignments), LATE, user id, attachment id, file name
CANVAS_NAME = re.compile(r"^(?:(?P<name>\w+?)_)??(?:(?P<late>LATE)_)?(?P<user>\d+|anon_[0-9A-Za-z]+)_"
                         r"(?P<attachment>\d+)_(?P<file>.+)$")
RESUBMITTED = re.compile(r"^(?P<base>.*?)(?:-(?P<copy>\d+))?(?P<ext>\.[^.]+)$")

# A Canvas zip is the instructor's download, but what is inside is the students' to choose.
MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 2 * 2**30          # unpacked, in all
MAX_RATIO = 200                    # unpacked / packed size of one member (a zip bomb is ~1000x)


class LmsError(ValueError):
    "Input an LMS step cannot use: the message says what was expected and what was found."


# ---------------------------------------------------------------- Canvas submissions in

@dataclass
class CanvasFile:
    path: Path
    student: str          # Canvas user id (or anon_<id>)
    name: str             # the name part Canvas put first ("" for anonymous assignments)
    late: bool
    attachment: int
    file_name: str        # the name the student's file had in Canvas (with Canvas's -N for a re-upload)

    @property
    def copy(self) -> int:
        match = RESUBMITTED.match(self.file_name)
        return int(match["copy"]) if match and match["copy"] else 0

    def is_named(self, notebook: str) -> bool:
        "Is this the assignment's notebook, perhaps with Canvas's -N of a re-upload?"
        match = RESUBMITTED.match(self.file_name)
        return bool(match) and (match["base"] + match["ext"]).lower() == notebook.lower()


def parse_canvas_name(file_name: str, path: Path | None = None) -> CanvasFile | None:
    match = CANVAS_NAME.match(file_name)
    if not match:
        return None
    return CanvasFile(path=path or Path(file_name), student=match["user"], name=match["name"] or "",
                      late=bool(match["late"]), attachment=int(match["attachment"]), file_name=match["file"])


def is_canvas_zip(path: Path) -> bool:
    "A zip whose notebooks all sit at its top level, named the way Canvas names them."
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.startswith("__MACOSX/") and not n.endswith("/")]
    except (zipfile.BadZipFile, OSError):
        return False
    notebooks = [n for n in names if n.endswith(".ipynb")]
    # (a member's folder is judged, and refused, by extract_zip: here only the names say "Canvas")
    return bool(notebooks) and all(parse_canvas_name(n.rsplit("/", 1)[-1]) for n in notebooks)


def is_canvas_download(path: Path) -> bool:
    "A Canvas zip, or a flat folder in which every notebook is named the way Canvas names them."
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return is_canvas_zip(path)
    if not path.is_dir() or (path / "submitted").is_dir():
        return False
    entries = [e for e in path.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
    if any(e.is_dir() for e in entries):   # (macOS's unzip leaves __MACOSX/ beside the files)
        return False
    notebooks = [e for e in entries if e.suffix == ".ipynb"]
    return bool(notebooks) and all(parse_canvas_name(e.name) for e in notebooks)


def extract_zip(archive: Path, dest: Path, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES) -> list:
    """Unpack `archive` into `dest`, flat (Canvas zips have no folders), refusing what a zip can do
    to the machine that opens it: names that leave `dest` (absolute, `..`), links and devices,
    more than `max_files` members, more than `max_bytes` unpacked, or a member that unpacks to far
    more than it packs. Sizes are counted while reading, not taken from the headers."""
    archive, dest = Path(archive), Path(dest)
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise LmsError(f"{archive}: expected a Canvas submissions zip, could not open it as a zip ({error})")
    written, total = [], 0
    with handle:
        members = [m for m in handle.infolist() if not m.is_dir()]
        if len(members) > max_files:
            raise LmsError(f"{archive}: {len(members)} files, more than the {max_files} a submissions zip may hold")
        for member in members:
            name = member.filename
            kind = stat.S_IFMT(member.external_attr >> 16)
            problem = member_problem(name, "file" if kind in (0, stat.S_IFREG) else "link")
            if problem == "outside":
                raise LmsError(f"{archive}: member {name!r} would be written outside the folder it is unpacked to")
            if problem:
                raise LmsError(f"{archive}: member {name!r} is a link or special file; expected plain files only")
            target = dest / Path(name).name
            if target.name.startswith(".") or not target.name:
                continue
            if target.exists():
                raise LmsError(f"{archive}: two members named {target.name!r}")
            size = 0
            with handle.open(member) as source, open(target, "xb") as out:
                while chunk := source.read(1 << 20):
                    size += len(chunk)
                    total += len(chunk)
                    if total > max_bytes:
                        raise LmsError(f"{archive}: unpacks to more than {max_bytes / 2**20:,.0f} MiB; refused")
                    if size > MAX_RATIO * max(member.compress_size, 1) + 2**20:
                        raise LmsError(f"{archive}: member {name!r} unpacks to over {MAX_RATIO}x its packed "
                                       "size (a zip bomb?); refused")
                    out.write(chunk)
            written.append(target)
    return written


def _unpacked(archive: Path) -> Path:
    "A private folder holding the zip's files, removed when this process exits."
    import atexit
    folder = Path(tempfile.mkdtemp(prefix="tito-canvas-"))
    atexit.register(shutil.rmtree, folder, True)
    extract_zip(archive, folder)
    return folder


def discover_canvas(path: Path, module: str, notebook: str) -> list:
    """Submissions of a Canvas download: one per Canvas user id, the latest matching notebook
    graded, the others named in the submission's `problem` (it goes into `detail`)."""
    from tito.grading.model import GradingError, Submission
    path = Path(path)
    try:
        folder = _unpacked(path) if path.is_file() else path
    except LmsError as error:
        raise GradingError(str(error)) from error
    by_student = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_file() or entry.name.startswith("."):
            continue
        parsed = parse_canvas_name(entry.name, entry)
        if parsed is not None:
            by_student.setdefault(parsed.student, []).append(parsed)
    if not by_student:
        raise GradingError(f"{path}: expected files named like Canvas's downloads "
                           f"(doejane_12345_67890_{notebook}), found none")
    return [_canvas_submission(files, notebook, Submission) for _, files in sorted(by_student.items())]


def _canvas_submission(files: list, notebook: str, Submission):
    files = sorted(files, key=lambda f: (f.attachment, f.copy))
    notebooks = [f for f in files if f.file_name.lower().endswith(".ipynb")]
    named = [f for f in notebooks if f.is_named(notebook)]
    first = files[-1]
    if not notebooks:
        kinds = ", ".join(f.file_name for f in files)
        return Submission(first.student, None, f"no notebook submitted (only {kinds})",
                          student_name=first.name, lms_late=first.late)
    chosen = (named or notebooks)[-1]
    notes = []
    if not named:
        notes.append(f"graded {chosen.file_name}: expected the file name {notebook}")
    others = [f.file_name for f in notebooks if f is not chosen]
    if others:
        notes.append(f"graded {chosen.file_name}, the latest of {len(notebooks)} notebooks "
                     f"(not graded: {', '.join(others)})")
    return Submission(chosen.student, chosen.path, "; ".join(notes), student_name=chosen.name, lms_late=chosen.late)


# ---------------------------------------------------------------- reading grades.csv

@dataclass
class Grades:
    rows: list                     # dicts, by column name
    cells: list                    # graded-cell columns
    path: Path
    sha256: str = ""
    points: dict = field(default_factory=dict)   # {grade_id: full marks}, when the course is at hand

    @property
    def max_score(self) -> float:
        return max((float(r["max_score"]) for r in self.rows), default=0.0)

    def graded(self) -> list:
        "Rows of students with something to grade (a zero with a reason counts; `missing` does not)."
        return [r for r in self.rows if r["status"] != "missing"]


def read_grades(path: Path, course: Path | None = None, module: str | None = None) -> Grades:
    from tito.grading.summary import read_grades as read_rows
    path = Path(path)
    try:
        rows, cells = read_rows(path)
    except (FileNotFoundError, ValueError) as error:
        raise LmsError(str(error)) from error
    grades = Grades(rows, cells, path, hashlib.sha256(path.read_bytes()).hexdigest())
    grades.points = _cell_points(course or path.parent, module, cells, rows)
    return grades


def _cell_points(course: Path, module, cells: list, rows: list) -> dict:
    "Each check's full marks from the course's source notebook, else the most any student got."
    source = sorted((Path(course) / "source").glob(f"{module or '*'}/*.ipynb"))
    if source:
        import nbformat
        from tito.grading.notebooks import graded_cells
        points = dict(graded_cells(nbformat.read(source[0], as_version=4)))
        if set(cells) <= set(points):
            return {gid: float(points[gid]) for gid in cells}
    return {gid: max((float(r[gid] or 0) for r in rows), default=0.0) for gid in cells}


def _score(value: float) -> str:
    "A score as Canvas exports one: at most two decimals, no trailing zeros."
    return f"{round(float(value), 2):g}"


# ---------------------------------------------------------------- Canvas gradebook out

CANVAS_KEYS = ("ID", "SIS User ID", "SIS Login ID")


@dataclass
class ExportReport:
    written: int = 0
    unknown: list = field(default_factory=list)      # in grades.csv, not in the LMS's list
    not_submitted: list = field(default_factory=list)  # status missing: left as the LMS had it
    not_graded_here: list = field(default_factory=list)  # in the LMS's list, not in grades.csv
    zero_with_reason: list = field(default_factory=list)  # (student, status) scored 0 with a reason
    missing_action: str = "left blank (never zeroed)"

    def lines(self) -> list:
        out = [f"{self.written} scores written"]
        if self.zero_with_reason:
            out.append(f"{len(self.zero_with_reason)} scored 0 with a reason in grades.csv (status): "
                       + ", ".join(f"{s} ({status})" for s, status in self.zero_with_reason))
        if self.not_submitted:
            out.append(f"{len(self.not_submitted)} without a submission, {self.missing_action}: "
                       + ", ".join(self.not_submitted))
        if self.unknown:
            out.append(f"{len(self.unknown)} students in grades.csv are not in the gradebook, NOT exported: "
                       + ", ".join(self.unknown))
        if self.not_graded_here:
            out.append(f"{len(self.not_graded_here)} students of the gradebook have no row in grades.csv, "
                       "left as they were")
        return out


def _read_table(path: Path) -> tuple:
    "(rows, delimiter, had_bom) of a CSV exported by an LMS (Canvas writes ';' in some locales)."
    raw = Path(path).read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LmsError(f"{path}: expected a UTF-8 CSV file, got undecodable bytes ({error})")
    first = text.splitlines()[:3]
    delimiter = ";" if first and all(len(next(csv.reader([line], delimiter=";"))) >
                                     len(next(csv.reader([line], delimiter=","))) for line in first if line) else ","
    return list(csv.reader(io.StringIO(text), delimiter=delimiter)), delimiter, bom


def canvas_assignment_column(header: list, assignment: str) -> int:
    "Index of the gradebook column of `assignment`: its full header, or its title before ' (id)'."
    titles = [re.sub(r"\s*\(\d+\)\s*$", "", column).strip() for column in header]
    for candidates in (header, titles):
        matches = [i for i, column in enumerate(candidates) if column.strip() == assignment.strip()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise LmsError(f"several gradebook columns are titled {assignment!r}: give the whole header, "
                           f"e.g. {header[matches[0]]!r}")
    start = header.index("Section") + 1 if "Section" in header else 0
    raise LmsError(f"no column {assignment!r} in the gradebook; its assignment columns are: "
                   + ", ".join(repr(c) for c in header[start:]))


def _number(text: str, delimiter: str) -> float:
    "A number as Canvas exports it (a decimal comma in ';'-separated files)."
    try:
        return float(text.replace(",", ".") if delimiter == ";" else text)
    except ValueError:
        raise LmsError(f"expected a number of points in the gradebook's Points Possible row, got {text!r}") from None


def canvas_import(grades: Grades, gradebook: Path, assignment: str, out: Path, key: str = "ID",
                  scale: bool = False) -> ExportReport:
    """Write `out`: the Canvas gradebook export `gradebook` with `assignment`'s column set from
    grades.csv. Every other cell, the header and the "Points Possible" row are kept as they were."""
    rows, delimiter, bom = _read_table(gradebook)
    if not rows or len(rows[0]) < 4 or "Student" not in rows[0][0] or "ID" not in rows[0][1]:
        raise LmsError(f"{gradebook}: expected a Canvas gradebook export (first columns Student, ID, ..., Section), "
                       f"got the header {rows[0][:5] if rows else 'nothing'}")
    header = rows[0]
    if key not in header:
        raise LmsError(f"{gradebook}: no column {key!r} to match students by; the header has {header[:6]}")
    id_column, column = header.index(key), canvas_assignment_column(header, assignment)
    factor = 1.0
    by_id = {r["student_id"]: r for r in grades.rows}
    report, seen = ExportReport(), set()
    for row in rows[1:]:
        if not row or len(row) <= column:
            continue
        if row[0].strip().startswith("Points Possible"):
            possible = row[column].strip()
            if "read only" in possible:
                raise LmsError(f"{gradebook}: the column {header[column]!r} is read only in Canvas")
            if possible and abs(_number(possible, delimiter) - grades.max_score) > 1e-9:
                if not scale:
                    raise LmsError(f"the Canvas assignment {header[column]!r} is worth {possible} points, grades.csv "
                                   f"{grades.max_score:g}: pass --scale to rescale the scores to {possible}, "
                                   "or change the points in Canvas")
                factor = _number(possible, delimiter) / grades.max_score
            continue
        if all(re.fullmatch(r"\s*(Muted|Manual Posting.*)?\s*", cell, re.I) for cell in row):
            continue   # Canvas's posting-policy row
        student = row[id_column].strip()
        graded = by_id.get(student)
        if graded is None:
            report.not_graded_here.append(student)
            continue
        seen.add(student)
        if graded["status"] == "missing":
            report.not_submitted.append(student)
            continue
        if graded["status"] != "graded":
            report.zero_with_reason.append((student, graded["status"]))
        row[column] = _score(float(graded["score"]) * factor)
        report.written += 1
    report.unknown = sorted(set(by_id) - seen)
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    _write(out, ("\ufeff" if bom else "") + buffer.getvalue())
    return report


def _write(path: Path, text: str) -> None:
    atomic_write(Path(path), text)


def _csv_text(header: list, rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[spreadsheet_safe(str(cell)) for cell in row] for row in rows])
    return buffer.getvalue()


# ---------------------------------------------------------------- Gradescope and Moodle CSV out

GRADESCOPE_HEADER = ["Name", "SID", "Email", "Total Score", "Max Points", "Status"]


def gradescope_csv(grades: Grades, out: Path) -> ExportReport:
    """Gradescope's score columns (Name, SID, Email, Total Score, Max Points, Status): SID is the
    student id of grades.csv; a student without a submission is listed with status Missing and no score."""
    report, rows = ExportReport(), []
    for r in grades.rows:
        missing = r["status"] == "missing"
        if missing:
            report.not_submitted.append(r["student_id"])
        else:
            report.written += 1
        rows.append([r.get("student_name", ""), r["student_id"], "", "" if missing else _score(r["score"]),
                     _score(r["max_score"]), "Missing" if missing else "Graded"])
    _write(out, _csv_text(GRADESCOPE_HEADER, rows))
    return report


MOODLE_KEYS = {"idnumber": "ID number", "username": "Username", "email": "Email address"}


def moodle_csv(grades: Grades, out: Path, assignment: str, key: str = "idnumber") -> ExportReport:
    """Moodle's "Import grades > CSV file": an identifier column (map it from to the user field
    named in its header), the assignment's grade and a feedback column. Rows of students without
    a submission are left out: Moodle would clear their grade."""
    if key not in MOODLE_KEYS:
        raise LmsError(f"expected a Moodle user field out of {sorted(MOODLE_KEYS)}, got {key!r}")
    report, rows = ExportReport(missing_action="left out (a blank grade would clear theirs in Moodle)"), []
    for r in grades.rows:
        if r["status"] == "missing":
            report.not_submitted.append(r["student_id"])
            continue
        report.written += 1
        rows.append([r["student_id"], _score(r["score"]), r["detail"]])
    _write(out, _csv_text([MOODLE_KEYS[key], assignment, "Feedback"], rows))
    return report


# ---------------------------------------------------------------- one JSON for other tools

JSON_FORMAT = "tinytorch-grades"


def json_export(grades: Grades, out: Path, module: str = "") -> dict:
    "Every row of grades.csv with its per-check results and where it came from."
    import tinytorch
    journal = grades.path.parent / ".tito-grade" / "results"
    students = []
    for r in grades.rows:
        entry = journal / f"{r['student_id']}.json"
        facts = json.loads(entry.read_text(encoding="utf-8")) if entry.is_file() else {}
        messages = facts.get("messages", {})
        number = lambda name: float(r[name]) if r.get(name) not in (None, "") else None   # noqa: E731
        students.append({
            "student_id": r["student_id"], "student_name": r.get("student_name", ""),
            "lms_late": {"yes": True, "no": False}.get(r.get("lms_late", "")),
            "score": float(r["score"]), "max_score": float(r["max_score"]), "status": r["status"],
            "detail": r["detail"], "raw_score": number("raw_score"), "late": r.get("late", ""),
            "late_by_hours": number("late_by_hours"), "penalty": number("penalty"),
            "manual_score": number("manual_score"), "needs_manual": number("needs_manual"),
            "checks": [{"grade_id": gid, "score": float(r[gid] or 0), "max_score": grades.points.get(gid),
                        "passed": grades.points.get(gid) is not None and float(r[gid] or 0) >= grades.points[gid],
                        "reasons": messages.get(gid, [])} for gid in grades.cells],
            "submission_hash": facts.get("submission_hash", ""), "source_hash": facts.get("source_hash", ""),
        })
    document = {
        "format": JSON_FORMAT, "version": 1, "module": module,
        "checks": [{"grade_id": gid, "max_score": grades.points.get(gid)} for gid in grades.cells],
        "max_score": grades.max_score,
        "provenance": {"grades_csv": str(grades.path.resolve()), "grades_csv_sha256": grades.sha256,
                       "tinytorch_version": tinytorch.__version__,
                       "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "students": students,
    }
    _write(out, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return document
