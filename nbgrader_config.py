# nbgrader's configuration for this course folder, taken from settings.ini beside it,
# so that plain `nbgrader` commands (autograde, generate_feedback, export, formgrader)
# see the same course that `tito release` / `tito grade` write.
import configparser
from pathlib import Path

_here = Path(__file__).resolve().parent
_settings = configparser.ConfigParser()
_settings.read(_here / "settings.ini", encoding="utf-8")

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)
c.CourseDirectory.root = str(_here)
c.CourseDirectory.course_id = _settings["course"]["course_id"]
c.CourseDirectory.db_url = f"sqlite:///{_here / 'gradebook.db'}"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
c.Execute.timeout = _settings["grading"].getint("cell_timeout")
c.Execute.raise_on_iopub_timeout = False
c.Execute.interrupt_on_timeout = True
c.ClearSolutions.enforce_metadata = True
