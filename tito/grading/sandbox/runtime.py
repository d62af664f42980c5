"""The student runtime: a copy of the parts of tinytorch a student's notebook may import, the
kernel's boot file (`kernel_boot.py`, next to this module) and matplotlib's font list."""
from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Files of the package a student's notebook may import; everything else (the solutions in
# core/spatial.py and core/im2col.py, the grading tools) stays out of the kernel's reach.
STUDENT_RUNTIME_FILES = (
    "__init__.py",
    "core/__init__.py", "core/tensor.py", "core/layers.py", "core/optim.py",
    "checks.py", "record.py",
)

BOOT_NAME = "_tinytorch_kernel.py"   # the boot file's name inside the runtime
BOOT_FILE = Path(__file__).with_name("kernel_boot.py")
FONT_FOLDER = "mpl"                  # the runtime's copy of matplotlib's font list

_runtime_lock = threading.Lock()
_runtime_path: Path | None = None


def build_student_runtime(dest: Path, package_dir: Path | None = None) -> Path:
    "Copy the student-visible files of the `tinytorch` package (and the kernel's boot script) into `dest`."
    if package_dir is None:
        import tinytorch
        package_dir = Path(tinytorch.__file__).resolve().parent
    dest = Path(dest)
    for relative in STUDENT_RUNTIME_FILES:
        source = package_dir / relative
        if not source.is_file():
            raise FileNotFoundError(f"student runtime: {source} is missing (expected the exported package; "
                                    "run `tito export`)")
        target = dest / "tinytorch" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    shutil.copyfile(BOOT_FILE, dest / BOOT_NAME)
    # Compiled once here, by the grader, from the files just copied: every kernel (run with -B,
    # which writes no bytecode) would otherwise compile the whole library again at its first import.
    compileall.compile_dir(dest / "tinytorch", quiet=1)
    _readable_by_all(dest)
    return dest


def student_runtime() -> Path:
    "This process's student runtime, built on first use (removed when the process exits)."
    global _runtime_path
    with _runtime_lock:
        if _runtime_path is None or not (_runtime_path / BOOT_NAME).exists():
            folder = Path(tempfile.mkdtemp(prefix="tinytorch-runtime-"))
            import atexit
            atexit.register(shutil.rmtree, folder, True)
            _runtime_path = build_student_runtime(folder)
            _prebuild_font_cache(_runtime_path / FONT_FOLDER)
        return _runtime_path


def _prebuild_font_cache(folder: Path) -> None:
    """Give kernels matplotlib's font list, so that each copies it instead of scanning fonts (~1 s).

    The list is the grader's own (matplotlib builds it once per user and version); fonts it names
    that the sandbox cannot see make matplotlib rebuild its list, as it would anyway."""
    folder.mkdir(exist_ok=True)
    try:
        import matplotlib
        cache = Path(matplotlib.get_cachedir())
        if not list(cache.glob("fontlist-v*.json")):
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
        for fontlist in cache.glob("fontlist-v*.json"):
            shutil.copyfile(fontlist, folder / fontlist.name)
    except (ImportError, OSError, subprocess.TimeoutExpired):
        pass   # no matplotlib, or no cache: each kernel builds its own
    _readable_by_all(folder)


def _readable_by_all(folder: Path) -> None:
    "Read by the kernel's unprivileged uid, written by no one."
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
