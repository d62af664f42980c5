"""Around the grading: what keeps a class's hand-ins and a busy machine from hurting the batch.

Links out of the submissions folder are not followed; a notebook too large to read safely is
first read by a child process under a memory cap; one grader at a time works in a course
folder; a full disk is said plainly; the private copies of students' notebooks that a killed
grader leaves are removed on the next run (issue 12).
"""
import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

# A notebook file above this size is read by a child process with a memory cap first: parsing
# JSON can take ~25 times the file's size (a file of `[{},{},...]`), which is bounded below it.
PRECHECK_BYTES = 2**20
WORKDIR_PREFIX = "tito-grade-"
LOCK_NAME = "grade.lock"


class Busy(RuntimeError):
    "Another `tito grade` holds the course folder."


class DiskFull(RuntimeError):
    "The disk (or quota) filled up while the grader wrote the course folder."


# ---------------------------------------------------------------- links

def link_out_of(path: Path, root: Path) -> str:
    """Why `path`, found under the submissions folder `root`, may not be read: a part of it is a
    symbolic link that leads out of `root`. Empty when it stays inside (links within are fine)."""
    path, root = Path(path), Path(root)
    if path.resolve().is_relative_to(root.resolve()):
        return ""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            kind = "folder" if current.is_dir() else "file" if current.exists() else "path that does not exist"
            return (f"{current.relative_to(root)} is a symbolic link to a {kind} outside the submissions "
                    "folder; links out of it are never followed")
    return "it lies outside the submissions folder; links out of it are never followed"


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return Path(path).is_file() and Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path, max_member_bytes: int) -> dict:
    """Unpack the regular files of a .zip or .tar(.gz) of submissions into `dest` (made private,
    0700); return {member name: why it was not unpacked}. A member that is a symbolic or hard
    link, or whose path leaves `dest` (absolute, `..`), is never unpacked, nor one above
    `max_member_bytes` (a notebook the grader would not read anyway)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(mode=0o700, parents=True)
    refused = {}
    for name, kind, size, read in archive_members(Path(archive)):
        if member_problem(name, kind) == "outside":
            refused[name] = f"archive member {name} points outside the archive; it was not unpacked"
        elif kind == "link":
            refused[name] = (f"archive member {name} is a symbolic link; links are never followed, so it was "
                             "not unpacked")
        elif kind == "dir":
            (dest / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        elif kind != "file":
            refused[name] = f"archive member {name} is not a regular file; it was not unpacked"
        elif size > max_member_bytes:
            refused[name] = (f"archive member {name} is {size / 2**20:,.0f} MiB, above the "
                             f"{max_member_bytes / 2**20:g} MiB a submission may be; it was not unpacked")
        else:
            target = dest / name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with read() as source, open(target, "xb") as out:
                shutil.copyfileobj(source, out)
    return refused


def member_problem(name: str, kind: str) -> str | None:
    """Why an archive member must not be unpacked, whatever the archive: "outside" (its path is
    absolute, climbs with `..`, or names a drive or a NUL), "link" or "special" (not a plain file
    or folder); None when it may be. One rule for every unpacker (`unpack`, `lms.extract_zip`)."""
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\x00" in name:
        return "outside"
    if kind == "link":
        return "link"
    if kind not in ("file", "dir"):
        return "special"
    return None


def archive_members(archive: Path):
    "(name, 'file' | 'dir' | 'link' | 'other', size, opener) of every member of a zip or tar archive."
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                mode = info.external_attr >> 16
                kind = ("link" if stat.S_ISLNK(mode) else "dir" if info.is_dir() else
                        "file" if not mode or stat.S_ISREG(mode) else "other")
                yield info.filename.rstrip("/"), kind, info.file_size, lambda info=info: bundle.open(info)
        return
    with tarfile.open(archive) as bundle:
        for info in bundle:
            kind = ("link" if info.issym() or info.islnk() else "dir" if info.isdir() else
                    "file" if info.isreg() else "other")
            yield info.name.rstrip("/"), kind, info.size, lambda info=info: bundle.extractfile(info)


# ---------------------------------------------------------------- reading a large notebook safely

_CHECK = """
import os, resource, sys
from tito.grading.notebooks import InvalidNotebook, parse_json
# The cap counts what reading the notebook adds to this interpreter, as it stands now.
mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
limit = mapped + int(sys.argv[2]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    with open(sys.argv[1], "rb") as handle:
        parse_json(handle.read(), int(sys.argv[3]), int(sys.argv[4]))
except MemoryError:
    sys.exit(3)
except InvalidNotebook as error:
    sys.stdout.write(str(error))
    sys.exit(2)
"""


def precheck(path: Path, size: int, grader_memory_mb: int, max_cells: int, max_nesting: int) -> str:
    """Why the notebook at `path` may not be read by the grader (empty: it may). Files above
    PRECHECK_BYTES are parsed first by a child process whose address space is capped at
    `grader_memory_mb`, so that one submission cannot take the grader's memory."""
    if size <= PRECHECK_BYTES:
        return ""
    run = subprocess.run([sys.executable, "-c", _CHECK, str(path), str(int(grader_memory_mb)),
                          str(max_cells), str(max_nesting)], capture_output=True, text=True)
    if run.returncode == 0:
        return ""
    if run.returncode == 2 and run.stdout:
        return run.stdout.strip()
    if run.returncode != 3:
        raise RuntimeError(f"the grader's notebook check failed: {run.stderr.strip()[-300:]}")
    return (f"reading it would take more than the {grader_memory_mb:,} MiB of the grader's memory a submission "
            "may use (grader_memory_mb): clear its outputs, save and submit again")


# ---------------------------------------------------------------- one grader per course folder

@contextmanager
def course_lock(state: Path):
    """Hold `state/grade.lock` (flock) while grading; another grader of the same course folder
    gets Busy at once, naming the process that holds it."""
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    handle = open(state / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise Busy(f"another `tito grade` ({holder}) is grading this course folder ({state.parent}); "
                       "wait for it to finish, then run this one again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()   # releases the lock


# ---------------------------------------------------------------- private working copies

def _start_time(pid: int) -> str:
    "The start time of process `pid` (clock ticks since boot), or '' if there is none."
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def private_workdir() -> Path:
    """A fresh folder for one submission's files, readable by its owner only (0700): the notebook
    in it is a student's. Its name carries this process's pid and start time, so that the next
    run can tell a copy left by a killed grader from one still in use. A sandboxed kernel does
    not read it through the host folder: bubblewrap binds the file (0644) into the sandbox's own
    work folder, which only that kernel can see; unsandboxed, the kernel runs as the grader."""
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{pid}.{_start_time(pid)}-"))


def clean_stale_workdirs(tmp: Path | None = None) -> list:
    "Remove the working copies of graders that no longer run (killed mid-batch); return them."
    removed = []
    tmp = Path(tmp or tempfile.gettempdir())
    for folder in tmp.glob(f"{WORKDIR_PREFIX}*"):
        owner = folder.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        pid, _, started = owner.partition(".")
        try:
            mine = folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.geteuid()
        except OSError:
            continue
        if not mine:
            continue
        if not pid.isdigit() or not started or _start_time(int(pid)) != started:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# ---------------------------------------------------------------- a full disk

def disk_full(error: BaseException) -> bool:
    "Whether `error` (an OSError, or SQLAlchemy's/sqlite's OperationalError) means no space was left."
    for item in (error, getattr(error, "orig", None), error.__cause__, error.__context__):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if item is not None and type(item).__name__ == "OperationalError" and "disk is full" in str(item).lower():
            return True
    return False


def atomic_write(path: Path, data, mode: str = "w") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)   # mkstemp makes it private; grades and feedback are meant to be read
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
