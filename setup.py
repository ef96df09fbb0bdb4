"""Copies the catalogue of built-in models into the package as it is built.

models.toml stays at the top of the repository, the one file people read
and edit; the wheel carries a copy as ``laminae/models.toml``, which
:mod:`laminae.network.catalogue` reads with importlib.resources.  An
editable install gets no copy (its package folder is core/ itself), and the
catalogue then reads the checkout's own file.  Everything else is in
pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGUE = "models.toml"


class BuildWithCatalogue(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            source = Path(__file__).resolve().parent / CATALOGUE
            if not source.is_file():  # an sdist built without MANIFEST.in, say: fail the build, not the user
                raise FileNotFoundError(f"{source}: the catalogue of built-in models is missing")
            self.copy_file(str(source), str(Path(self.build_lib) / "laminae" / CATALOGUE))


setup(cmdclass={"build_py": BuildWithCatalogue})
