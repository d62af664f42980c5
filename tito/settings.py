"""The course's settings (`settings.ini`), read by `tito` and by `nbgrader_config.py`."""
import configparser
import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class CourseSettings:
    course_id: str
    modules: tuple
    notebooks: dict           # module name -> notebook file name
    cell_timeout: int
    submission_timeout: int
    memory_mb: int
    max_processes: int
    max_output_bytes: int
    max_notebook_mb: int
    max_outputs: int
    max_cells: int
    max_nesting: int
    grader_memory_mb: int
    sandbox: bool
    jobs: int

    def notebook(self, module: str) -> str:
        return self.notebooks.get(module, f"{module}.ipynb")

    @property
    def parallel_jobs(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)


GRADING_KEYS = ("cell_timeout", "submission_timeout", "memory_mb", "max_processes", "max_output_bytes",
                "max_notebook_mb", "max_outputs", "max_cells", "max_nesting", "grader_memory_mb", "sandbox", "jobs")


def load_settings(root: Path) -> CourseSettings:
    "Read `root/settings.ini`; a missing file or key is an error that names it."
    path = Path(root) / "settings.ini"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the course folder needs its settings.ini")
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    try:
        course, grading = parser["course"], parser["grading"]
        modules = tuple(m.strip() for m in course["modules"].split(",") if m.strip())

        def required(read, key):
            if key not in grading:   # configparser would answer None
                raise KeyError(f"[grading] {key}")
            return read(key)
        # every [grading] key is a field of CourseSettings, read by the field's type
        read = {int: grading.getint, bool: grading.getboolean}
        limits = {f.name: required(read[f.type], f.name) for f in fields(CourseSettings) if f.name in GRADING_KEYS}
        return CourseSettings(
            course_id=course["course_id"],
            modules=modules,
            notebooks={m: course.get(f"notebook_{m}", f"{m}.ipynb") for m in modules},
            **limits,
        )
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: bad or missing setting ({error}); see the comments in the file") from error
