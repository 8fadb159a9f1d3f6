"""What the zygote loads: every shim, PID 1 and exec'd command is a fork of it."""

from __future__ import annotations

import subprocess
import sys

# stdlib modules that register an os.register_at_fork hook run in every forked child
AT_FORK_HOOKS = ("threading", "random", "logging", "concurrent.futures.thread")


def test_the_zygote_imports_no_module_with_an_at_fork_hook() -> None:
    """The zygote's real entry point (``python -m``, as the engine starts it; it exits at once
    without its owner) imports none of them: their hooks would run Python code in each child
    it forks, copying pages of its heap there (~170 faults in every shim, PID 1 and exec)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pytest_pycontain.native.zygote", "0", "1"],
        capture_output=True, text=True, timeout=60)
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "pytest_pycontain.native.process" in imported, done.stderr[-2000:]
    assert done.returncode == 1  # its owner is not its parent: it went at once
    assert sorted(imported & set(AT_FORK_HOOKS)) == []
