"""Where the course's files live, found from the current directory upwards."""
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    "The nearest folder, from `start` upwards, that holds `pyproject.toml` with `[tool.nbdev]`."
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.exists() and "[tool.nbdev]" in candidate.read_text(encoding="utf-8"):
            return folder
    raise FileNotFoundError(
        f"no pyproject.toml with a [tool.nbdev] section in {here} or above: run tito inside the course folder")
