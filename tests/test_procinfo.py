"""procinfo: the one owner-liveness rule that journals, address leases and Docker labels share."""

from __future__ import annotations

import os
import subprocess

from pytest_pycontain.procinfo import process_alive, process_start_time


def test_a_live_process_and_its_start_time() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = process_start_time(child.pid)
        assert isinstance(start, int) and start >= process_start_time(os.getpid())
        assert process_alive(child.pid) and process_alive(child.pid, start)
        assert not process_alive(child.pid, start + 1)  # a later process with the same pid
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, start)


def test_no_process() -> None:
    assert not process_alive(0) and not process_alive(-1)
    assert process_start_time(2**22 + 1) is None  # above the kernel's largest pid
