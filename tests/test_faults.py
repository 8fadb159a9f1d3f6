"""The fault state both backends share: what is in place after each request, the userspace
fallback where the kernel has no netem, and what is left as it was when a step fails. The
kernel side is exercised by test_native_network.py and test_docker_backend.py; here a shaper
that writes down what it was asked stands in for it, with real delay lines."""

from __future__ import annotations

import socket

import pytest

from pytest_pycontain.errors import NetworkError, NotSupported
from pytest_pycontain.native.faults import DelayLine, Fault, FaultState, Member, Partition


class Recorder:
    """A ``Shaper`` that writes down its calls; ``netem_missing`` makes it a kernel without
    netem, ``line_fails`` one where packet sockets fail too."""

    def __init__(self, *, netem_missing: bool = False, line_fails: bool = False):
        self.calls: list[tuple[str, object]] = []
        self.netem_missing, self.line_fails = netem_missing, line_fails
        self.lines: list[DelayLine] = []
        self.peers: list[socket.socket] = []

    def netem(self, fault: Fault) -> None:
        self.calls.append(("netem", fault))
        if self.netem_missing and fault.shaping:  # no fault and a total loss need no netem
            raise NotSupported("no netem here")

    def start_line(self) -> DelayLine:
        self.calls.append(("start", None))
        if self.line_fails:
            raise OSError("no packet sockets")
        rx, rx_peer = socket.socketpair()  # quiet ends: nothing is ever sent through them
        tx, tx_peer = socket.socketpair()
        self.peers += [rx_peer, tx_peer]
        line = DelayLine(rx, tx, "vpdtest")
        self.lines.append(line)
        return line

    def stop_line(self, line: DelayLine) -> None:
        self.calls.append(("stop", line))
        line.close()


def test_faults_merge_and_go_to_netem() -> None:
    state, shaper = FaultState(), Recorder()
    state.set("a", state.fault("a").delayed(200, 10), shaper)
    state.set("a", state.fault("a").lossy(30), shaper)
    assert state.fault("a") == Fault(delay_ms=200, jitter_ms=10, loss=30)
    assert state.fault("b") == Fault()
    assert [c for c, _ in shaper.calls] == ["netem", "netem"] and state.line("a") is None


def test_without_netem_a_delay_line_stands_in_and_keeps_going() -> None:
    state, shaper = FaultState(), Recorder(netem_missing=True)
    state.set("a", Fault().delayed(100), shaper)
    line = state.line("a")
    assert line is not None and (line.delay, line.jitter, line.loss) == (0.1, 0.0, 0.0)
    state.set("a", state.fault("a").lossy(50), shaper)  # the same line, new numbers
    assert state.line("a") is line and line.loss == 50
    assert [c for c, _ in shaper.calls] == ["netem", "start"]
    state.set("a", Fault(), shaper)  # undone: the line stops, the kernel is cleared
    assert state.line("a") is None and state.fault("a") == Fault()
    assert [c for c, _ in shaper.calls] == ["netem", "start", "stop", "netem"]


def test_total_loss_needs_no_line() -> None:
    assert not Fault(loss=100).shaping and not Fault().shaping
    assert Fault(loss=50).shaping and Fault(delay_ms=1).shaping


def test_a_failed_fallback_says_both_reasons_and_changes_nothing() -> None:
    state = FaultState()
    state.set("a", Fault().lossy(10), Recorder())
    with pytest.raises(NotSupported, match="no netem here; the userspace fallback failed too: "
                                           "no packet sockets"):
        state.set("a", Fault().delayed(5), Recorder(netem_missing=True, line_fails=True))
    assert state.fault("a") == Fault(loss=10) and state.line("a") is None


@pytest.mark.parametrize("make, message", [
    (lambda: Fault().delayed(-1), "delay: ms and jitter_ms must be >= 0, got -1, 0"),
    (lambda: Fault().delayed(1, -2), "delay: ms and jitter_ms must be >= 0, got 1, -2"),
    (lambda: Fault().lossy(101), "loss: percent must be between 0 and 100, got 101"),
    (lambda: Fault().lossy(-0.5), "loss: percent must be between 0 and 100, got -0.5"),
])
def test_bad_values_are_named(make, message: str) -> None:
    with pytest.raises(NetworkError, match=message.replace("(", r"\(")):
        make()


def test_partitions_are_made_both_ways_once_and_healed() -> None:
    state, done = FaultState(), []
    a, b = Member("a", "10.0.0.2"), Member("b", "10.0.0.3")

    def cut(member: Member, peer: Member) -> None:
        done.append(("cut", member.key, peer.ip))

    state.partition(Partition(a, b), cut, lambda m, p: None)
    state.partition(Partition(b, a), cut, lambda m, p: None)  # in place already
    assert done == [("cut", "a", "10.0.0.3"), ("cut", "b", "10.0.0.2")]
    assert state.partitioned("b", "a")
    assert state.heal() == [Partition(a, b)] and not state.partitioned("a", "b")
    assert state.heal() == []


def test_a_partition_that_fails_halfway_is_mended() -> None:
    state, done = FaultState(), []
    a, b = Member("a", "10.0.0.2"), Member("b", "10.0.0.3")

    def cut(member: Member, peer: Member) -> None:
        if member.key == "b":
            raise NetworkError("b is gone")
        done.append(("cut", member.key))

    with pytest.raises(NetworkError, match="b is gone"):
        state.partition(Partition(a, b), cut, lambda m, p: done.append(("mend", m.key)))
    assert done == [("cut", "a"), ("mend", "a")] and not state.partitioned("a", "b")


def test_a_member_that_leaves_takes_its_faults_along() -> None:
    state, shaper = FaultState(), Recorder(netem_missing=True)
    a, b, c = (Member(k, f"10.0.0.{n}") for n, k in enumerate("abc", 2))
    state.partition(Partition(a, b), lambda m, p: None, lambda m, p: None)
    state.partition(Partition(b, c), lambda m, p: None, lambda m, p: None)
    state.set("a", Fault().delayed(10), shaper)
    line = state.forget("a")
    assert line is shaper.lines[0]
    line.close()
    assert state.fault("a") == Fault() and not state.partitioned("a", "b")
    assert state.partitioned("b", "c") and state.take_lines() == {}
