"""setuptools' build backend, leaving no build/ folder in the checkout.

pip builds a wheel in the source tree (`pip install .`), and setuptools keeps its intermediate copies in
<source>/build/, which then lingers beside the code. This backend is setuptools' own, except that a wheel's
build/ folder is removed afterwards when the build made it (one that was there before is left alone).
"""

import shutil
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  every other hook as setuptools has it


def _without_build_folder(hook):
    def build(*args, **kwargs):
        folder = Path("build")
        existed = folder.exists()
        try:
            return hook(*args, **kwargs)
        finally:
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)

    return build


build_wheel = _without_build_folder(_setuptools.build_wheel)
build_editable = _without_build_folder(_setuptools.build_editable)
