"""The catalogue: the built-in models, which every command takes by bare name.

The catalogue is models.toml, the one file at the top of the repository;
the wheel carries a copy inside the package (setup.py puts it there), read
through importlib.resources.  An editable install has no copy, its package
folder being the checkout's core/, so the checkout's own file is read.
Commands get the file's path, as if the user had named it: every message
then names a file the user can open.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from laminae.errors import SpecError, did_you_mean
from laminae.network.spec import model_tables, read_toml

CATALOGUE_FILE = "models.toml"


def catalogue_path() -> Path:
    """The catalogue file: the package's copy, else the checkout's models.toml."""
    packaged = files("laminae") / CATALOGUE_FILE
    if isinstance(packaged, Path) and packaged.is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / CATALOGUE_FILE
    if checkout.is_file():
        return checkout
    raise SpecError(f"the built-in models are missing: this installation of laminae has no {CATALOGUE_FILE} (reinstall it)")


def catalogue() -> dict[str, dict[str, Any]]:
    """Every built-in model's table as written, ``extends`` applied, in file order."""
    path = catalogue_path()
    return model_tables(read_toml(path), str(path))


def model_file(file: str, name: str | None) -> tuple[str, str | None]:
    """FILE and NAME as a command takes them, where a bare built-in model name
    stands for that model of the catalogue (``laminae train lenet``).

    A file that exists always wins; so does anything that reads as a path
    (a ``/``, a suffix), which goes on to the usual "no such file".
    """
    if name is not None or Path(file).exists() or "/" in file or Path(file).suffix:
        return file, name
    names = list(catalogue())
    if file not in names:
        raise SpecError(
            f"{file}: no such file, and no built-in model {file!r}{did_you_mean(file, names)} (laminae models lists them)"
        )
    return str(catalogue_path()), file
