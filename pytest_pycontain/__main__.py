"""``python -m pytest_pycontain``: the ``pycontain`` command, for when its script is not on
``PATH`` (a virtualenv that is not activated)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
