"""A TCP relay that listens in one network namespace and connects from another.

The private dockerd runs in a network namespace of its own (so the host's FORWARD chain never
sees its bridged traffic). Two things must still cross between that namespace and the test
process's: the ports dockerd publishes (it runs this as its ``--userland-proxy-path``, with
docker-proxy's arguments, and it listens in the test process's namespace) and dockerd's own
pulls from the test registry on the host's loopback (testenv runs it the other way round).

A socket keeps the namespace it was made in, so the listener is made after ``setns`` into the
listening namespace and every upstream socket after returning to our own. This file runs as a
script (dockerd execs it), so it imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket in the namespace at ``netns``; the caller's stays its own."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # an IPv6 listener is v6-only: dockerd asks for 0.0.0.0 in a proxy of its own
            return socket.create_server((host or "0.0.0.0", port), family=family)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _serve_one(client: socket.socket, upstream: tuple[str, int]) -> None:
    try:
        remote = socket.create_connection(upstream, timeout=30)
        remote.settimeout(None)
    except OSError:
        client.close()
        return
    threading.Thread(target=_pump, args=(remote, client), daemon=True).start()
    _pump(client, remote)


def serve(server: socket.socket, upstream: tuple[str, int]) -> None:
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve_one, args=(client, upstream), daemon=True).start()


def _options(argv: list[str]) -> dict[str, str]:
    """docker-proxy's Go-style flags (``-name value`` or ``-name=value``) plus ours."""
    options: dict[str, str] = {}
    index = 0
    while index < len(argv):
        name = argv[index].lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
        else:
            index += 1
            value = argv[index] if index < len(argv) else ""
        options[name] = value
        index += 1
    return options


def main(argv: list[str]) -> int:
    options = _options(argv)
    ready = int(options.get("ready-fd", "3"))
    if options.get("proto", "tcp") != "tcp":
        # udp is not relayed across namespaces: the real proxy serves it in dockerd's namespace
        real = options.get("real-proxy", "docker-proxy")
        os.execvp(real, [real, *_strip_ours(argv)])
    try:
        server = listen_in(options["listen-netns"], options.get("host-ip", ""),
                           int(options["host-port"]))
    except (OSError, KeyError, ValueError) as exc:
        os.write(ready, f"1\n{exc}".encode())
        return 1
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.write(ready, b"0\n")
    os.close(ready)
    serve(server, (options["container-ip"], int(options["container-port"])))
    return 0


def _strip_ours(argv: list[str]) -> list[str]:
    """``argv`` without the options only this relay knows (for the real docker-proxy)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.lstrip("-")
        if name.split("=")[0] in ("listen-netns", "real-proxy", "ready-fd"):
            skip = "=" not in name
            continue
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
