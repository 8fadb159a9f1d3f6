"""The native engine's small parts on their own, without root: the healthcheck scheduler (Docker's
rules, driven by a probe we count) and the janitor (a removed container's records undone in the
background, journalled as removed, and ``drain`` waiting for it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pytest_pycontain.native import state
from pytest_pycontain.native.health import HealthCheck
from pytest_pycontain.native.janitor import Janitor

MS = 1_000_000  # the config's durations are in nanoseconds


def settle(predicate, what: str, limit: float = 30.0) -> None:
    """Wait (a bounded while) for what a background thread does; never asserts a duration."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


class Probe:
    """Answers exit codes from a script, then the last one for ever, and counts its calls."""

    def __init__(self, *codes: int):
        self.codes = list(codes)
        self.calls: list[tuple[object, float]] = []
        self.before = lambda: None

    def __call__(self, command: object, timeout: float) -> int:
        self.before()
        self.calls.append((command, timeout))
        return self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]


@pytest.mark.parametrize(("test", "command"), [
    (["CMD-SHELL", "wget -qO- localhost:80", "||", "exit 1"], "wget -qO- localhost:80 || exit 1"),
    (["CMD", "pg_isready", "-U", "x"], ["pg_isready", "-U", "x"]),
])
def test_a_check_runs_the_command_docker_would(test: list[str], command: object) -> None:
    probe = Probe(0)
    check = HealthCheck.from_config({"Test": test, "Interval": MS, "Timeout": 7 * 10**9},
                                    probe, lambda: False, name="c")
    assert check is not None and check.status == "starting"
    check.start()
    try:
        settle(lambda: check.status == "healthy", "a passing probe makes it healthy")
    finally:
        check.stop()
    assert probe.calls[0] == (command, 7.0)


@pytest.mark.parametrize("config", [None, {}, {"Test": []}, {"Test": ["NONE"]}])
def test_no_check_or_none_means_no_health(config: dict | None) -> None:
    assert HealthCheck.from_config(config, Probe(0), lambda: False, name="c") is None


def test_retries_failures_in_a_row_make_it_unhealthy_and_one_success_heals() -> None:
    probe = Probe(1, 1, 0, 1, 1, 1, 1)
    check = HealthCheck.from_config({"Test": ["CMD", "x"], "Interval": MS, "Retries": 3},
                                    probe, lambda: False, name="c")
    assert check is not None
    seen: list[str | None] = []  # the status as each probe starts
    probe.before = lambda: seen.append(check.status)
    check.start()
    try:
        # the status as the seventh probe starts: the sixth's result is in by then (waiting
        # for "unhealthy" alone could stop the check before the seventh started)
        settle(lambda: len(seen) >= 7, "seven probes")
    finally:
        check.stop()
    # two failures are not enough, a success heals, and three failures in a row are
    assert seen[:7] == ["starting", "starting", "starting", "healthy", "healthy", "healthy",
                        "unhealthy"]


def test_it_stops_probing_once_the_container_is_gone_or_kept() -> None:
    gone = threading.Event()
    probe = Probe(0)
    check = HealthCheck.from_config({"Test": ["CMD", "x"], "Interval": MS}, probe, gone.is_set,
                                    name="c")
    assert check is not None
    check.start()
    settle(lambda: len(probe.calls) >= 2, "probes while it runs")
    gone.set()
    settle(lambda: "health-c" not in {t.name for t in threading.enumerate()},
           "the scheduler ends")
    calls = len(probe.calls)
    check.stop()
    assert check.status is None  # kept: no status of ours any more
    assert len(probe.calls) == calls


def test_the_janitor_undoes_records_in_the_background_and_journals_the_removal(
        tmp_path: Path) -> None:
    journal = state.Journal(tmp_path / "state")
    janitor = Janitor(journal)
    try:
        made = []
        for number in range(3):
            directory = tmp_path / f"c{number}"
            (directory / "upper" / "deep").mkdir(parents=True)
            (directory / "upper" / "deep" / "file").write_text("x")
            made.append(directory)
            janitor.discard(f"c{number}", [journal.record("dir", container=f"c{number}",
                                                          path=str(directory))])
        janitor.drain()
        assert not any(d.exists() for d in made)
        removed = [r["container"] for r in state.read_journal(journal.path)
                   if r["kind"] == "removed"]
        assert removed == ["c0", "c1", "c2"]
    finally:
        janitor.close()
        journal.close()


def test_the_janitor_waits_for_a_removal_to_settle_before_it_undoes(tmp_path: Path) -> None:
    """A removed container's shim may still be ending: what it holds goes only after."""
    journal = state.Journal(tmp_path / "state")
    janitor = Janitor(journal)
    try:
        directory = tmp_path / "c"
        directory.mkdir()
        seen: list[bool] = []
        janitor.discard("c", [journal.record("dir", container="c", path=str(directory))],
                        before=lambda: seen.append(directory.exists()))
        janitor.drain()
        assert seen == [True] and not directory.exists()
    finally:
        janitor.close()
        journal.close()


def test_a_record_that_cannot_be_undone_does_not_stop_the_janitor(tmp_path: Path) -> None:
    journal = state.Journal(tmp_path / "state")
    janitor = Janitor(journal)
    try:
        janitor.discard("bad", [{"kind": "no-such-kind", "container": "bad"}])
        good = tmp_path / "good"
        good.mkdir()
        janitor.discard("good", [journal.record("dir", container="good", path=str(good))])
        janitor.drain()
        assert not good.exists()
        assert [r["container"] for r in journal.records() if r["kind"] == "removed"] == [
            "bad", "good"]
    finally:
        janitor.close()
        journal.close()
    janitor.drain()  # closed, with nothing left: returns at once
