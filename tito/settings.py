"""The course's settings (`settings.ini`), read by `tito` and by `nbgrader_config.py`."""
import configparser
import os
from dataclasses import dataclass
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
        return CourseSettings(
            course_id=course["course_id"],
            modules=modules,
            notebooks={m: course.get(f"notebook_{m}", f"{m}.ipynb") for m in modules},
            cell_timeout=required(grading.getint, "cell_timeout"),
            submission_timeout=required(grading.getint, "submission_timeout"),
            memory_mb=required(grading.getint, "memory_mb"),
            max_processes=required(grading.getint, "max_processes"),
            max_output_bytes=required(grading.getint, "max_output_bytes"),
            max_notebook_mb=required(grading.getint, "max_notebook_mb"),
            max_outputs=required(grading.getint, "max_outputs"),
            max_cells=required(grading.getint, "max_cells"),
            max_nesting=required(grading.getint, "max_nesting"),
            grader_memory_mb=required(grading.getint, "grader_memory_mb"),
            sandbox=required(grading.getboolean, "sandbox"),
            jobs=required(grading.getint, "jobs"),
        )
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: bad or missing setting ({error}); see the comments in the file") from error
