"""How to run the ``pycontain`` command so that a line we print works as printed.

A virtualenv's ``bin`` is often not on ``PATH`` (pytest run as ``.venv/bin/python -m pytest``,
or from an IDE), so a bare ``pycontain`` in a hint would fail with "command not found".
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


def pycontain_argv() -> list[str]:
    """``pycontain`` when that name finds this installation's script, else the script's full
    path, else this interpreter running the module."""
    script = Path(sysconfig.get_path("scripts")) / "pycontain"
    if script.is_file() and os.access(script, os.X_OK):
        found = shutil.which("pycontain")
        if found and Path(found).resolve() == script.resolve():
            return ["pycontain"]
        return [str(script)]
    return [sys.executable, "-m", "pytest_pycontain"]
