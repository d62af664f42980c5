"""Stage "find": where a class's submissions are, as `Submission`s (student, path, what is odd).

A folder in nbgrader's layout, a flat folder of `<student>.ipynb`, a Canvas download, or a .zip /
.tar of any of them. Nothing here reads a notebook: links out of the folder are refused (a link
to source/ would be the solution) and an archive member that could be a student's notebook but is
unsafe refuses that student (tito.grading.intake decides what is unsafe).
"""
import os
import tarfile
import zipfile
from pathlib import Path

from tito.grading import intake
from tito.grading.model import GradingError, Submission


def discover_submissions(source: Path, module: str, notebook: str, state: Path, max_notebook_mb: float) -> list:
    """`discover` for a folder, or for a .zip / .tar(.gz) of one (as LMSs hand them out), which is
    unpacked into the private `state/unpacked/`: its regular files only. A student whose part of the
    archive held a link (or a member pointing outside it) is refused, saying which member."""
    from tito.grading import lms
    if not intake.is_archive(source) or lms.is_canvas_download(source):   # Canvas zips: lms unpacks them itself
        return discover(source, module, notebook)
    dest = Path(state) / "unpacked" / Path(source).name
    try:
        refused = intake.unpack(source, dest, int(max_notebook_mb * 2**20))
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise GradingError(f"{source} is not an archive that can be read ({type(error).__name__}: {error})") from None
    found = {sub.student: sub for sub in discover(dest, module, notebook)}
    for member, why in refused.items():
        parts = Path(member).parts
        parts = parts[1:] if parts[:1] == ("submitted",) else parts
        # Only a member that could be the student's notebook (or a folder on its way) refuses the student.
        if parts and ".." not in parts and not Path(member).is_absolute() and (
                member.endswith(".ipynb") or len(parts) <= 2):
            student = Path(parts[0]).stem if len(parts) == 1 else parts[0]
            found[student] = Submission(student, dest / member, refused=why)
    return [found[name] for name in sorted(found)]


def discover(directory: Path, module: str, notebook: str) -> list:
    """Submissions in nbgrader's layout (`DIR/<student>/<module>/<notebook>`, or a course folder
    holding `submitted/`) or a flat folder of `<student>.ipynb` files."""
    directory = Path(directory)
    from tito.grading import lms
    if lms.is_canvas_download(directory):   # a Canvas "Download Submissions" zip or folder
        return lms.discover_canvas(directory, module, notebook)
    if not directory.is_dir():
        raise GradingError(f"{directory} is not a folder of submissions (nor a .zip, .tar or .tar.gz of one)")
    if (directory / "submitted").is_dir():
        directory = directory / "submitted"
    found = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        # A link out of the folder is never followed (a link to source/ would be the solution).
        outside = intake.link_out_of(entry, directory)
        if entry.suffix == ".ipynb" and (entry.is_file() or entry.is_symlink()):
            found[entry.stem] = Submission(entry.stem, entry, refused=outside)
        elif outside and not entry.is_file():
            found[entry.name] = Submission(entry.name, None, outside)
        elif entry.is_dir():
            found[entry.name] = _from_student_folder(entry, module, notebook, directory)
    return [found[name] for name in sorted(found)]


def _from_student_folder(folder: Path, module: str, notebook: str, root: Path) -> Submission:
    student = folder.name
    assignment = folder / module
    outside = intake.link_out_of(assignment, root) if os.path.lexists(assignment) else ""
    if outside:
        return Submission(student, None, outside)
    if not assignment.is_dir():
        return Submission(student, None, f"no {module}/ folder in {folder.name}/")
    expected = assignment / notebook
    if expected.is_file() or expected.is_symlink():
        return Submission(student, expected, refused=intake.link_out_of(expected, root))
    others = sorted(p for p in assignment.glob("*.ipynb") if p.is_file() or p.is_symlink())
    if len(others) == 1:
        return Submission(student, others[0], f"graded {others[0].name}: expected the file name {notebook}",
                          refused=intake.link_out_of(others[0], root))
    if others:
        return Submission(student, None, f"no {notebook}; found {', '.join(p.name for p in others)}")
    return Submission(student, None, f"no {notebook} in {folder.name}/{module}/")
