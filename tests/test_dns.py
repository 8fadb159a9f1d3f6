"""The DNS responder: answers for names on the network, NXDOMAIN at once for the rest."""

from __future__ import annotations

import socket
import struct

import pytest

from pytest_pycontain.native.dns import Responder, hosts_file, resolv_conf, respond

TABLE = {"web": ["10.213.0.2"], "db": ["10.213.0.3"], "cache": ["10.213.0.3"]}


def lookup(name: str) -> list[str]:
    return TABLE.get(name, [])


def reverse(ip: str) -> list[str]:
    return sorted(n for n, ips in TABLE.items() if ip in ips)


def query(name: str, qtype: int = 1, qid: int = 0x1234, flags: int = 0x0100,
          qdcount: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".") if p)
    return (struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, 0) + labels + b"\0"
            + struct.pack("!HH", qtype, 1))


def parse(reply: bytes) -> dict:
    """A small independent reader of the reply: header fields and the answers' data."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    offset = 12
    for _ in range(qd):
        while reply[offset]:
            offset += reply[offset] + 1
        offset += 5
    answers = []
    for _ in range(an):
        assert reply[offset:offset + 2] == b"\xc0\x0c"  # points at the question's name
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", reply[offset + 2:offset + 12])
        data = reply[offset + 12:offset + 12 + length]
        if rtype == 1:
            answers.append(socket.inet_ntoa(data))
        else:
            labels, i = [], 0
            while data[i]:
                labels.append(data[i + 1:i + 1 + data[i]].decode())
                i += data[i] + 1
            answers.append(".".join(labels))
        offset += 12 + length
    assert offset == len(reply)
    return {"id": qid, "qr": flags >> 15, "rcode": flags & 0xF, "aa": (flags >> 10) & 1,
            "rd": (flags >> 8) & 1, "qd": qd, "answers": answers}


def test_a_record_of_a_name() -> None:
    r = parse(respond(query("web"), lookup, reverse))
    assert r == {"id": 0x1234, "qr": 1, "rcode": 0, "aa": 1, "rd": 1, "qd": 1,
                 "answers": ["10.213.0.2"]}


def test_names_are_case_insensitive_and_may_end_with_a_dot() -> None:
    assert parse(respond(query("WeB."), lookup, reverse))["answers"] == ["10.213.0.2"]


def test_unknown_name_is_nxdomain() -> None:
    r = parse(respond(query("example.com"), lookup, reverse))
    assert r["rcode"] == 3 and r["answers"] == [] and r["qd"] == 1


def test_aaaa_of_a_known_name_is_empty_success() -> None:
    r = parse(respond(query("db", qtype=28), lookup, reverse))
    assert r["rcode"] == 0 and r["answers"] == []


def test_ptr() -> None:
    r = parse(respond(query("3.0.213.10.in-addr.arpa", qtype=12), lookup, reverse))
    assert r["rcode"] == 0 and r["answers"] == ["cache", "db"]
    r = parse(respond(query("9.0.213.10.in-addr.arpa", qtype=12), lookup, reverse))
    assert r["rcode"] == 3


@pytest.mark.parametrize(("packet", "rcode"), [
    (query("web", qdcount=2), 1),  # FORMERR
    (query("web", flags=0x1000), 4),  # opcode 2 (status): NOTIMP
    (query("web")[:14], 1),  # cut in the name
])
def test_bad_queries_get_an_error_code(packet: bytes, rcode: int) -> None:
    reply = respond(packet, lookup, reverse)
    assert struct.unpack("!H", reply[2:4])[0] & 0xF == rcode
    assert reply[:2] == packet[:2]


def test_garbage_gets_no_answer() -> None:
    assert respond(b"\x00\x01", lookup, reverse) is None
    assert respond(query("web", flags=0x8000), lookup, reverse) is None  # a response


def test_responder_over_udp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    responder = Responder(sock)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)  # an answer, not a hang
    try:
        responder.add(["app", "App-Alias"], "10.213.0.7")
        client.sendto(query("app-alias", qid=7), responder.address)
        assert parse(client.recv(512))["answers"] == ["10.213.0.7"]
        client.sendto(query("nowhere.invalid", qid=8), responder.address)
        r = parse(client.recv(512))
        assert (r["id"], r["rcode"]) == (8, 3)
        responder.remove("10.213.0.7")
        client.sendto(query("app", qid=9), responder.address)
        assert parse(client.recv(512))["rcode"] == 3
        assert responder.lookup("app-alias") == []
    finally:
        client.close()
        responder.close()
    assert sock.fileno() == -1
    responder.close()  # twice is fine


def test_the_table_forgets_one_address_and_keeps_the_rest() -> None:
    """Names shared by two addresses (aliases of a scaled service), reverse lookups, and one
    address forgotten without the others' names going."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    responder = Responder(sock)
    try:
        responder.add(["web-1", "Web."], "10.213.0.2")
        responder.add(["web-2", "web"], "10.213.0.3")
        responder.add(["web"], "10.213.0.3")  # again: no second entry
        responder.add(["db"], "10.213.0.4")
        assert responder.lookup("web") == ["10.213.0.2", "10.213.0.3"]
        assert responder.reverse("10.213.0.3") == ["web", "web-2"]
        responder.remove("10.213.0.2")
        assert responder.lookup("web") == ["10.213.0.3"]
        assert responder.lookup("web-1") == [] and responder.reverse("10.213.0.2") == []
        responder.remove("10.213.0.2")  # gone already: fine
        responder.remove("10.213.0.3")
        assert responder.snapshot() == {"db": ["10.213.0.4"]}
        assert responder.reverse("10.213.0.4") == ["db"]
    finally:
        responder.close()


def test_resolv_conf_and_hosts() -> None:
    """/etc/hosts as Docker writes it: local names, extra entries, then the container's own
    addresses under its hostname (a dotted one under its first label too); never a peer."""
    assert resolv_conf("10.213.0.1") == "nameserver 10.213.0.1\noptions ndots:0\n"
    local = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
    hosts = hosts_file("web", ["10.213.0.2", "10.213.1.2"], [("db", "10.0.0.5")])
    assert hosts.splitlines() == [*local, "10.0.0.5\tdb", "10.213.0.2\tweb", "10.213.1.2\tweb"]
    assert hosts_file("db.example.test", ["10.213.0.3"]).splitlines()[len(local):] == [
        "10.213.0.3\tdb.example.test db"]
    assert hosts_file("lonely", []).splitlines() == local
