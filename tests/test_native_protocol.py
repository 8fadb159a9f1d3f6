"""The native engine's messages: every kind survives encode/decode as itself, with its fields
typed as they were (tuples stay tuples), over a real SEQPACKET socket with fds, and over a
pipe; anything else is a ProtocolError. No root needed."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from pytest_pycontain.native import protocol as p

RUN_PLAN = p.RunPlan(
    directory="/run/pycontain/containers/abc", lower=("/cache/l1", "/cache/l2"),
    argv=("/bin/sh", "-c", "echo hi"), env={"PATH": "/bin", "HOSTNAME": "abc"},
    workdir="/srv", user="nobody:nogroup", hostname="abc", host_network=False,
    read_only=True, mounts=(p.Bind("/tmp/data", "/data", True), p.Bind("/tmp/x", "/x")),
    tmpfs=(("/run", "size=64m"),), init=True, cgroups=("/sys/fs/cgroup/pycontain/abc",),
    etc={"hosts": "127.0.0.1\tlocalhost\n", "hostname": "abc\n", "resolv.conf": ""},
    pause=True)
EXEC_PLAN = p.ExecPlan(pid=4242, argv=("true",), env={"A": "1"}, user="", workdir="/",
                       cgroups=())

MESSAGES = [
    p.Run(RUN_PLAN), p.Exec(EXEC_PLAN), p.Warm(), p.Go(), p.Signal(15), p.Keep(),
    p.Keep(({"db": ["10.0.0.2"]}, {"web": ["10.0.1.3"]}), (8080,), "10.0.0.2"), p.Exit(),
    p.Launch("/merged", ("sleep", "1"), {"HOME": "/"}, 0, 0, (1, 2), "/", init=False),
    p.Created(10, 9), p.Started(10, 9), p.Exited(137), p.Kept(), p.ExecStarted(11),
    p.ExecExited(0), p.ExecExited(126, "no such user"), p.Failed("exec: nope", 127),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_comes_back_as_itself(message: p.Message) -> None:
    assert p.decode(p.encode(message)) == message


def test_every_op_has_its_message_kind() -> None:
    kinds = {type(m).op for m in MESSAGES}
    assert kinds == set(p.Op)


def test_plans_keep_their_types_across_the_wire() -> None:
    plan = p.decode(p.encode(p.Run(RUN_PLAN))).plan
    assert isinstance(plan.lower, tuple) and isinstance(plan.argv, tuple)
    assert all(isinstance(m, p.Bind) for m in plan.mounts)
    assert plan.mounts[0].read_only and not plan.mounts[1].read_only
    assert plan.tmpfs == (("/run", "size=64m"),)
    with pytest.raises(AttributeError):
        plan.argv = ("changed",)  # frozen: made once by the engine, read as sent


def test_the_wire_format_is_one_json_object_with_its_op() -> None:
    assert p.encode(p.Signal(9)) == b'{"op": "signal", "number": 9}'
    assert p.encode(p.Go()) == b'{"op": "go"}'


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[1, 2]", b'{"no": "op"}', b'{"op": "dance"}',
    b'{"op": "signal"}', b'{"op": "signal", "number": 9, "extra": 1}',
    b'{"op": "run", "plan": {"directory": "/x"}}',
])
def test_anything_else_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode(data)


def test_messages_and_fds_over_a_seqpacket_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        p.send(ours, p.Exec(EXEC_PLAN), [w])
        p.send(ours, p.Exited(3))
        message, fds = p.receive_with_fds(theirs)
        assert message == p.Exec(EXEC_PLAN) and len(fds) == 1
        os.write(fds[0], b"x")  # the passed fd is the pipe's write end
        os.close(fds[0])
        assert os.read(r, 1) == b"x"
        assert p.receive(theirs) == p.Exited(3)
        ours.close()
        assert p.receive(theirs) is None  # the other end closed
        assert p.receive_with_fds(theirs) == (None, [])
    finally:
        theirs.close()
        os.close(r)
        os.close(w)


def test_a_bad_datagram_does_not_leak_the_fds_it_carried() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        socket.send_fds(ours, [b'{"op": "dance"}'], [w])
        os.close(w)
        with pytest.raises(p.ProtocolError):
            p.receive_with_fds(theirs)
        assert os.read(r, 1) == b""  # every write end is closed: the passed copy too
    finally:
        ours.close()
        theirs.close()
        os.close(r)


def test_a_message_down_a_pipe_is_read_to_its_end() -> None:
    r, w = os.pipe()
    big = p.Launch("/merged", ("x",) * 40000, {}, 0, 0, (), "/")  # more than a pipe holds

    def writer() -> None:  # blocks until the reader drains
        p.write_all(w, big)
        os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert p.read_all(r) == big
    finally:
        thread.join()
        os.close(r)
    r, w = os.pipe()
    os.close(w)
    assert p.read_all(r) is None  # nothing sent: PID 1's exec worked
    os.close(r)
