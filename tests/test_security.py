"""The privilege boundary: the same probes in a busybox container of each backend, the same
verdicts (Docker's is the reference; the native engine may only be stricter where it says so).

The probe is a small static C program (``data/security_probe.c``, built here with gcc) bound
into the container read-only; it never changes host state (a sysctl write puts back the value
just read, mounts are undone at once, and the probes that would reach the host when allowed
are left out of privileged runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ConfigError, ContainerError, NotSupported
from pytest_pycontain.idmap import host_uid, plan
from pytest_pycontain.security import DEFAULT_CAPABILITIES, capability_set, security_options

DATA = Path(__file__).parent / "data"
DEFAULT_CAPS = "00000000a80425fb"  # Docker's 14, as /proc/self/status shows them
# A device node that cannot be opened: the device cgroup says EPERM, a nodev mount EACCES.
DENIED = {"EPERM", "EACCES"}
# Where the native engine follows current Docker and the reference dockerd (20.10 here) is
# older: io_uring is out of the default profile and /proc/interrupts and powercap are masked
# since (stricter), and name_to_handle_at (it only names a file: opening by handle is what
# needs CAP_DAC_READ_SEARCH) is allowed since.
NEWER = {"syscall:io_uring_setup": ("EPERM", "ok"),
         "masked:/proc/interrupts": ("hidden", "readable"),
         "masked:/sys/devices/virtual/powercap": ("hidden", "readable"),
         "name_to_handle_at": ("ok", "EPERM")}

# Rootless mode (.ci/rootless runs this module as a user): capabilities are the user
# namespace's, so the kernel refuses what the host owns even where Docker's root allows it --
# device nodes (no mknod in a user namespace), the host's sysctls and kernel log, opening by
# handle. Never less strict than Docker: each of these is a refusal where Docker's is "ok".
ROOTLESS = host_uid() != 0
ROOTLESS_PRIVILEGED = {"masked:/proc/timer_list": "EACCES",
                       "sysctl:/proc/sys/kernel/core_pattern": "EACCES",
                       "open_by_handle_at": "EPERM", "syscall:syslog": "EPERM"}
needs_native = pytest.mark.skipif(native_blocker() is not None, reason=native_blocker() or "")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("the security probe is C built with gcc -static: install gcc")
    out = tmp_path_factory.mktemp("probe") / "probe"
    built = subprocess.run([gcc, "-static", "-O1", "-Wall", "-Werror", "-o", str(out),
                            str(DATA / "security_probe.c")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def ro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ro-bind")
    (path / "kept").write_text("read-only\n")
    return path


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory, test_registry):
    if native_blocker() is not None:
        pytest.skip(native_blocker() or "")
    from pytest_pycontain.native.engine import NativeEngine
    from pytest_pycontain.store import Store

    state = tmp_path_factory.mktemp("state")
    store = Store(tmp_path_factory.mktemp("store"), registry_mirror=test_registry.url,
                  attempts=2, backoff=0.01)
    engine = NativeEngine(state_dir=state, store=store)
    yield engine, engine.pull("busybox")
    engine.close()
    made = state / "containers"
    assert not made.exists() or not list(made.iterdir()), "the engine left container dirs"


@pytest.fixture(scope="module")
def docker(request: pytest.FixtureRequest):
    dockerd = request.getfixturevalue("dockerd")
    from pytest_pycontain.config import Settings
    from pytest_pycontain.docker import DockerEngine

    engine = DockerEngine(Settings(), base_url=dockerd.host)
    yield engine, engine.pull("busybox")
    engine.close()


@pytest.fixture(params=["native", pytest.param("docker", marks=pytest.mark.dockerd)])
def backend(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


class Prober:
    """Runs the probe in containers of one backend and parses its verdicts."""

    def __init__(self, engine, image, probe: Path, ro_dir: Path):
        self.engine, self.image, self.probe, self.ro_dir = engine, image, probe, ro_dir
        self.made: list = []

    def run(self, *, args=(), via_exec=False, **options) -> dict[str, str]:
        if options.get("privileged") and self.engine.name == "docker":
            self._privileged_docker_or_skip()
        mounts = [f"{self.probe}:/probe:ro", f"{self.ro_dir}:/ro:ro",
                  *options.pop("mounts", ())]
        argv = ["/probe", "ro=/ro", *args]
        if via_exec:
            container = self._run(command="sleep 1000", mounts=mounts, **options)
            result = container.exec(argv)
            assert result.exit_code == 0, result.output
            return parse(result.stdout)
        container = self._run(command=argv, mounts=mounts, **options)
        assert container.wait(timeout=30) == 0, container.logs()
        return parse(container.logs())

    def _privileged_docker_or_skip(self) -> None:
        """Docker's privileged mode asks runc for every capability it knows; where this host's
        own bounding set lacks one (a sandbox), the dockerd cannot start any such container."""
        try:
            self._run(command="true", privileged=True)
        except ContainerError as exc:
            if "unable to apply caps" not in str(exc):
                raise
            pytest.skip(f"this dockerd cannot start a privileged container here: {exc}")

    def _run(self, **options):
        container = self.engine.run(RunSpec(image=self.image, **options))
        self.made.append(container)
        return container

    def close(self) -> None:
        for container in self.made:
            container.remove()


def parse(output: str) -> dict[str, str]:
    verdicts = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        verdicts[key] = value
    return verdicts


@pytest.fixture
def prober(backend, probe, ro_dir):
    engine, image = backend
    made = Prober(engine, image, probe, ro_dir)
    yield made
    made.close()


def _assert_default_boundary(v: dict[str, str], *, root: bool = True,
                             backend: str = "native") -> None:
    caps = DEFAULT_CAPS if root else "0000000000000000"
    assert (v["status.CapEff"], v["status.CapPrm"]) == (caps, caps)
    assert v["status.CapBnd"] == DEFAULT_CAPS
    assert v["status.CapInh"] == v["status.CapAmb"] == "0000000000000000"
    assert v["status.Seccomp"] == "2"
    for key, verdict in v.items():
        if key.startswith("masked:") and not (backend == "docker" and key in NEWER):
            assert verdict in ("hidden", "ENOENT"), (key, verdict)
        if key.startswith("readonly:"):
            assert verdict in ("ro", "ENOENT"), (key, verdict)
        if key.startswith(("mount:", "unshare:")):
            assert verdict == "EPERM", (key, verdict)
    assert v["sysctl:/proc/sys/kernel/core_pattern"] in ("EROFS", "EACCES")
    for device in ("loop0", "kmsg"):
        if ROOTLESS or not root:
            assert v[f"mknod:{device}"] == "EPERM" and f"open:{device}" not in v, device
        else:
            assert v[f"mknod:{device}"] == "ok" and v[f"open:{device}"] in DENIED, device
    assert v["remount:/ro"] == "EPERM" and v["write:/ro"] in ("EROFS", "EACCES")
    assert v["remount:/"] == "EPERM"
    assert v["open_by_handle_at"] == "EPERM"
    assert v["syscall:clone3"] == "ENOSYS"
    for name in ("keyctl", "add_key", "request_key", "syslog", "sethostname", "setns", "bpf"):
        assert v[f"syscall:{name}"] == "EPERM", name


def test_the_default_boundary(prober) -> None:
    verdicts = prober.run()
    _assert_default_boundary(verdicts, backend=prober.engine.name)
    assert verdicts["write:/"] == "ok"


def test_exec_gets_the_same_boundary(prober) -> None:
    verdicts = prober.run(via_exec=True)
    _assert_default_boundary(verdicts, backend=prober.engine.name)


def test_a_non_root_user(prober) -> None:
    if ROOTLESS and not plan().full and prober.engine.name == "native":
        # one id mapped: no other user to be, said plainly, with the fix
        with pytest.raises(ContainerError) as info:
            prober.run(user="nobody")
        assert ("user nobody: uid 65534 gid 65534 is not mapped: rootless mode without "
                "subordinate ids maps only root") in str(info.value)
        assert "usermod --add-subuids" in str(info.value)
        return
    verdicts = prober.run(user="nobody")
    _assert_default_boundary(verdicts, root=False, backend=prober.engine.name)
    assert verdicts["mknod:loop0"] == "EPERM"


def test_a_read_only_root_stays_read_only(prober) -> None:
    verdicts = prober.run(read_only=True, tmpfs={"/tmp": ""})
    _assert_default_boundary(verdicts, backend=prober.engine.name)
    assert verdicts["write:/"] == "EROFS"


def test_privileged_gives_back_what_was_blocked(prober) -> None:
    verdicts = prober.run(privileged=True, args=["cgroup", "keys"])
    assert verdicts["status.CapEff"] == verdicts["status.CapBnd"] != DEFAULT_CAPS
    assert verdicts["status.Seccomp"] == "0"
    if ROOTLESS:  # what the host owns stays the host's (see ROOTLESS_PRIVILEGED)
        for key, refused in ROOTLESS_PRIVILEGED.items():
            assert verdicts.pop(key) == refused, key
        assert verdicts["mknod:kmsg"] == "EPERM" and "open:kmsg" not in verdicts
    else:
        assert verdicts["open:kmsg"] == "ok"
        assert verdicts["sysctl:/proc/sys/kernel/core_pattern"] == "ok"
        assert verdicts["open_by_handle_at"] == "ok"
    for path in ("/proc/keys", "/proc/timer_list", "/proc/interrupts", "/sys/firmware"):
        assert verdicts.get(f"masked:{path}", "readable") == "readable", path
    assert verdicts["readonly:/proc/sys"] == verdicts["readonly:/sys"] == "rw"
    for kind in ("tmpfs", "proc", "sysfs", "binfmt_misc"):
        assert verdicts[f"mount:{kind}"] == "ok", kind
    for kind in ("mnt", "uts", "ipc", "net", "pid", "cgroup", "user"):
        assert verdicts[f"unshare:{kind}"] == "ok", kind
    assert verdicts["remount:/ro"] == "ok" and verdicts["write:/ro"] == "ok"


def test_cap_add_net_admin_lets_ip_link_add_work_and_nothing_more(prober) -> None:
    container = prober._run(command="sleep 1000", cap_add=["NET_ADMIN"])
    result = container.exec("ip link add probe0 type bridge && ip link show probe0")
    assert result.exit_code == 0 and "probe0" in result.output, result.output
    plain = prober._run(command="sleep 1000")
    assert plain.exec("ip link add probe0 type bridge").exit_code != 0
    verdicts = prober.run(cap_add=["cap_net_admin"])
    assert verdicts["status.CapEff"] == verdicts["status.CapBnd"] == "00000000a80435fb"
    default = dict(prober.run())
    changed = {k for k in verdicts if verdicts[k] != default.get(k)}
    if ROOTLESS:  # a read-only /proc/sys: the network's own sysctls are the namespace's
        # user's, so NET_ADMIN turns the permission refusal into the read-only one
        sysctl = "sysctl:/proc/sys/net/ipv4/ip_unprivileged_port_start"
        assert (default[sysctl], verdicts[sysctl]) == ("EACCES", "EROFS")
        changed.discard(sysctl)
    assert changed == {"status.CapEff", "status.CapPrm", "status.CapBnd"}


def test_cap_drop_and_all(prober) -> None:
    verdicts = prober.run(cap_drop=["ALL"], cap_add=["CHOWN"])
    assert verdicts["status.CapEff"] == verdicts["status.CapBnd"] == "0000000000000001"
    assert verdicts["mknod:loop0"] == "EPERM"
    verdicts = prober.run(cap_drop=["MKNOD", "CAP_NET_RAW"])
    assert verdicts["status.CapEff"] == "00000000a00405fb"
    assert verdicts["mknod:loop0"] == "EPERM"


def test_security_opt(prober, tmp_path: Path) -> None:
    verdicts = prober.run(security_opt=["no-new-privileges"])
    assert verdicts["status.NoNewPrivs"] == "1" and verdicts["status.Seccomp"] == "2"
    verdicts = prober.run(security_opt=["seccomp=unconfined"])
    assert verdicts["status.Seccomp"] == "0"
    assert verdicts["status.CapEff"] == DEFAULT_CAPS  # unconfined syscalls, not capabilities
    assert verdicts["unshare:net"] == "EPERM"  # the capability still says no
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}]}))
    container = prober._run(command="sleep 1000", security_opt=[f"seccomp={profile}"])
    result = container.exec("mkdir /tmp/made; echo $?; grep Seccomp: /proc/self/status")
    assert "Permission denied" in result.stderr, result.output
    assert result.stdout == "1\nSeccomp:\t2\n"


def test_namespaced_sysctls(prober) -> None:
    container = prober._run(command="sleep 1000", sysctls={
        "net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmni": "1234"})
    result = container.exec("cat /proc/sys/net/ipv4/ip_unprivileged_port_start "
                            "/proc/sys/kernel/shmmni")
    assert result.output == "80\n1234\n"


VARIANTS = {
    "default": {},
    "exec": {"via_exec": True},
    "nobody": {"user": "nobody"},
    "read_only": {"read_only": True, "tmpfs": {"/tmp": ""}},
    "privileged": {"privileged": True, "args": ["cgroup", "keys"]},
    "net_admin": {"cap_add": ["NET_ADMIN"]},
    "no_new_privileges": {"security_opt": ["no-new-privileges"]},
    "unconfined": {"security_opt": ["seccomp=unconfined"]},
}


@pytest.mark.dockerd
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_native_gives_dockers_verdicts(native, docker, probe, ro_dir, variant) -> None:
    """Every probe: the native engine's verdict is Docker's (device nodes: denied either
    way), or current Docker's where NEWER says the reference dockerd is older."""
    verdicts = {}
    for name, (engine, image) in (("native", native), ("docker", docker)):
        prober = Prober(engine, image, probe, ro_dir)
        try:
            verdicts[name] = prober.run(**VARIANTS[variant])
        finally:
            prober.close()
    ours, reference = verdicts["native"], verdicts["docker"]
    differing = {k: (ours.get(k), reference.get(k)) for k in set(ours) | set(reference)
                 if ours.get(k) != reference.get(k)}
    assert set(ours) == set(reference), differing
    for key, theirs in reference.items():
        if key.startswith("open:") and ours[key] in DENIED and theirs in DENIED:
            continue
        if NEWER.get(key) == (ours[key], theirs):
            continue
        assert ours[key] == theirs, (key, differing)


# --- every process of a container, however it was forked ---------------------------------
# A shim cuts its own bounding set once, so PID 1 and the commands it forks after inherit the
# cut (a warm PID 1, forked before the shim knew the boundary, cuts its own; an exec helper
# for an attached container, its own): the sets must come out Docker's on every path.

_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp")
_NONE = "0000000000000000"
DOCKERS_SETS = {"CapInh": _NONE, "CapPrm": DEFAULT_CAPS, "CapEff": DEFAULT_CAPS,
                "CapBnd": DEFAULT_CAPS, "CapAmb": _NONE, "Seccomp": "2"}


def _sets(status: str) -> dict[str, str]:
    found = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in _SETS:
            found[key] = value.strip()
    return found


def _exec_sets(container, path: str) -> dict[str, str]:
    result = container.exec(["cat", path])
    assert result.exit_code == 0, result.output
    return _sets(result.stdout)


def _full_sets(bounding: str) -> dict[str, str]:
    return {"CapInh": _NONE, "CapPrm": bounding, "CapEff": bounding, "CapBnd": bounding,
            "CapAmb": _NONE, "Seccomp": "0"}


def test_pid1_and_each_exec_have_dockers_sets(backend) -> None:
    engine, image = backend
    container = engine.run(RunSpec(image=image, command="sleep 1000"))
    try:
        assert _exec_sets(container, "/proc/1/status") == DOCKERS_SETS
        for _ in range(2):  # the second after the first: nothing of it is left to the next
            assert _exec_sets(container, "/proc/self/status") == DOCKERS_SETS
    finally:
        container.remove()


def test_a_privileged_pid1_and_exec_keep_every_capability(backend) -> None:
    engine, image = backend
    privileged = Prober(engine, image, Path("/"), Path("/"))  # runs no probe
    try:
        if engine.name == "docker":
            privileged._privileged_docker_or_skip()
        container = privileged._run(command="sleep 1000", privileged=True)
        pid1 = _exec_sets(container, "/proc/1/status")
        assert pid1["CapBnd"] != DEFAULT_CAPS and pid1 == _full_sets(pid1["CapBnd"])
        assert _exec_sets(container, "/proc/self/status") == pid1
        if engine.name == "native":  # all of the host's
            assert pid1["CapBnd"] == _sets(Path("/proc/self/status").read_text())["CapBnd"]
    finally:
        privileged.close()


def test_native_sets_on_every_path(native) -> None:
    """A PID 1 forked by a shim that knew its boundary (the host's network: no warm shim), an
    exec through an exec helper (an attached handle), and the shim itself: its bounding set is
    the container's, its own effective set untouched (it never execs)."""
    engine, image = native
    ours = _sets(Path("/proc/self/status").read_text())
    for network in ("host", None):
        container = engine.run(RunSpec(image=image, command="sleep 1000", network=network))
        try:
            assert _exec_sets(container, "/proc/1/status") == DOCKERS_SETS, network
            assert _exec_sets(container, "/proc/self/status") == DOCKERS_SETS, network
            if network is None:  # the exec helper's path is the same for either
                attached = engine.attach(container.id)
                assert _exec_sets(attached, "/proc/self/status") == DOCKERS_SETS
            shim = _sets(Path(f"/proc/{container.shim}/status").read_text())
            assert shim["CapBnd"] == DEFAULT_CAPS, network
            assert shim["CapEff"] == ours["CapEff"] and shim["Seccomp"] == "0", network
        finally:
            container.remove()


def test_a_prepared_boundary_cuts_once_for_what_is_forked_after() -> None:
    """``boundary.Prepared`` in a forked process as in a shim: the cut leaves its effective
    set, a child entered with it has Docker's sets; a privileged one has nothing to cut."""
    from pytest_pycontain.native import boundary as bd

    if ROOTLESS:
        pytest.skip("the host's bounding set is cut only by root (rootless: the engine's "
                    "user namespace does it, tested above)")
    default = bd.boundary_for(security_options())
    privileged = bd.prepare(bd.boundary_for(security_options(privileged=True)))
    assert privileged.is_cut and bd.prepare(privileged) is privileged
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the shim
        try:
            prepared = bd.prepare(default)
            before = prepared.is_cut
            prepared.cut()
            shim = _sets(Path("/proc/self/status").read_text())
            child = os.fork()
            if child == 0:  # PID 1 or an exec'd command
                try:
                    bd.enter(prepared, 0, 0, [0])
                    os.write(write_w, json.dumps(_sets(
                        Path("/proc/self/status").read_text())).encode() + b"\n")
                finally:
                    os._exit(0)
            os.waitpid(child, 0)
            os.write(write_w, json.dumps({"before": before, "shim": shim}).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(write_w)
    with os.fdopen(read_r) as lines:
        entered, shim = (json.loads(line) for line in lines)
    os.waitpid(pid, 0)
    assert entered == DOCKERS_SETS
    assert shim["before"] is False
    assert shim["shim"]["CapBnd"] == DEFAULT_CAPS and shim["shim"]["Seccomp"] == "0"
    assert shim["shim"]["CapEff"] == _sets(Path("/proc/self/status").read_text())["CapEff"]


def test_a_seccomp_program_the_kernel_refuses_is_an_error_naming_the_call() -> None:
    from pytest_pycontain.native import syscalls as sc

    before = _sets(Path("/proc/self/status").read_text())["Seccomp"]
    with pytest.raises(OSError, match=r"prctl\(PR_SET_SECCOMP\)"):  # an empty program
        sc.SeccompFilter(b"").load()
    assert _sets(Path("/proc/self/status").read_text())["Seccomp"] == before


def test_a_cut_the_kernel_refuses_says_so_and_is_not_taken_as_done() -> None:
    """Without CAP_SETPCAP the bounding set cannot be cut: an OSError (the shim reports it as
    the container's failure), and a later ``enter`` would try again, never skip it."""
    from pytest_pycontain.native import boundary as bd
    from pytest_pycontain.native import syscalls as sc

    if ROOTLESS:
        pytest.skip("the host's bounding set is cut only by root")
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            everything = int(_sets(Path("/proc/self/status").read_text())["CapEff"], 16)
            setpcap = 1 << 8
            sc.capset(everything & ~setpcap, everything, 0)
            prepared = bd.prepare(bd.boundary_for(security_options()))
            try:
                prepared.cut()
                said = "cut"
            except OSError as exc:
                said = f"{exc.errno} {exc}"
            os.write(write_w, json.dumps([said, prepared.is_cut]).encode())
        finally:
            os._exit(0)
    os.close(write_w)
    with os.fdopen(read_r) as answer:
        said, done = json.loads(answer.read())
    os.waitpid(pid, 0)
    assert said.startswith("1 ") and "PR_CAPBSET_DROP" in said and done is False


# --- bad input: refused before anything starts, on both backends --------------------------

@pytest.mark.parametrize(("options", "words"), [
    ({"cap_add": ["NET_FLY"]}, "cap_add: unknown capability 'NET_FLY'"),
    ({"cap_drop": ["CAP_NOPE"]}, "cap_drop: unknown capability 'CAP_NOPE'"),
    ({"security_opt": ["seccomp-profile=x"]}, "unknown option"),
    ({"security_opt": ["no-new-privileges:maybe"]}, "takes true or false"),
    ({"security_opt": ["seccomp=/no/such/profile.json"]}, "/no/such/profile.json: cannot read"),
    ({"sysctls": {"kernel.core_pattern": "|/x"}}, "'kernel.core_pattern' is not in a separate"),
    ({"sysctls": {"kernel.hostname": "x"}}, "pass hostname= instead"),
    ({"sysctls": {"net.ipv4.ip_forward": "1"}, "network": "host"}, "host's network"),
])
def test_bad_input_is_refused_before_anything_starts(backend, options, words) -> None:
    engine, image = backend
    before = len(getattr(engine, "containers", {}))
    with pytest.raises(ConfigError) as info:
        engine.run(RunSpec(image=image, command="true", **options))
    assert words in str(info.value)
    assert len(getattr(engine, "containers", {})) == before, "a container was left behind"


def test_a_malformed_profile_names_the_file_and_where(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "defaultAction": "SCMP_ACT_ERRNO",\n  "syscalls": [\n}')
    with pytest.raises(ConfigError, match=rf"seccomp={bad_json}:4:1: not JSON"):
        security_options(security_opt=[f"seccomp={bad_json}"])
    bad_field = tmp_path / "field.json"
    bad_field.write_text(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}))
    with pytest.raises(ConfigError, match=r"field.json: \$\.syscalls\[1\]\.args\[0\]\.op: "
                                          r"unknown operator 'SCMP_CMP_SOMETIMES'"):
        security_options(security_opt=[f"seccomp={bad_field}"])
    with pytest.raises(ConfigError, match=r"\$\.defaultAction: unknown action None"):
        security_options(security_opt=[f"seccomp={_write(tmp_path, {'syscalls': []})}"])


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    return path


def test_capability_arithmetic_is_dockers() -> None:
    every = capability_set(["ALL"], [], False)
    assert len(every) == 41 and capability_set([], [], True) == every
    assert capability_set(["ALL"], ["SYS_ADMIN"], False) == every - {"SYS_ADMIN"}
    assert capability_set(["NET_ADMIN"], ["ALL"], False) == {"NET_ADMIN"}
    assert capability_set([], ["KILL"], False) == DEFAULT_CAPABILITIES - {"KILL"}
    options = security_options(cap_add=["cap_sys_ptrace", "SYS_PTRACE"])
    assert options.cap_add == ("SYS_PTRACE",)


@needs_native
def test_native_refusals_name_the_option(native) -> None:
    engine, image = native
    before = len(engine.containers)
    with pytest.raises(NotSupported, match="apparmor=docker-default"):
        engine.run(RunSpec(image=image, command="true",
                           security_opt=["apparmor=docker-default"]))
    assert len(engine.containers) == before


@needs_native
def test_the_default_profile_is_compiled_once(native) -> None:
    from pytest_pycontain.native import seccomp

    text = seccomp.default_profile_text()
    first = seccomp.compile_profile(text, DEFAULT_CAPABILITIES)
    again = seccomp.compile_profile(text, DEFAULT_CAPABILITIES)
    assert first is again and len(first) % 8 == 0
    # a capability changes which rules apply, so it is a program of its own
    assert seccomp.compile_profile(text, DEFAULT_CAPABILITIES | {"SYS_ADMIN"}) != first


def test_build_steps_get_the_same_boundary(backend, probe, tmp_path: Path) -> None:
    """A RUN step is a container like any other: Docker's 14 capabilities, its seccomp filter,
    /proc/sys read-only, no mounts, no namespaces, no devices."""
    engine, _busybox = backend  # pulled: the build finds it in the store
    shutil.copy2(probe, tmp_path / "probe")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nCOPY probe /probe\nRUN /probe > /verdicts.txt\n"
        'CMD ["cat", "/verdicts.txt"]\n')
    built = engine.build(tmp_path, no_cache=True)
    container = engine.run(RunSpec(image=built, command=None))
    try:
        assert container.wait(timeout=30) == 0
        verdicts = parse(container.logs())
    finally:
        container.remove()
    assert verdicts["status.CapEff"] == verdicts["status.CapBnd"] == DEFAULT_CAPS
    assert verdicts["status.Seccomp"] == "2"
    assert verdicts["sysctl:/proc/sys/kernel/core_pattern"] in ("EROFS", "EACCES")
    assert verdicts["mount:tmpfs"] == verdicts["unshare:net"] == "EPERM"
    if ROOTLESS:
        assert verdicts["mknod:kmsg"] == "EPERM" and "open:kmsg" not in verdicts
    else:
        assert verdicts["open:kmsg"] in DENIED
    assert verdicts["open_by_handle_at"] == "EPERM"


def test_without_libseccomp_the_filter_is_not_supported(tmp_path: Path) -> None:
    """No libseccomp on the host: NotSupported naming the option, unless seccomp=unconfined
    (run in a child where the library cannot be found)."""
    script = """
import ctypes.util, sys
found = ctypes.util.find_library
ctypes.util.find_library = lambda name: (
    "libpycontain-no-such-seccomp.so" if name == "seccomp" else found(name))
from pytest_pycontain.errors import NotSupported
from pytest_pycontain.native.boundary import boundary_for
from pytest_pycontain.security import security_options
try:
    boundary_for(security_options())
except NotSupported as exc:
    print("refused:", exc)
print("unconfined:", boundary_for(security_options(security_opt=["seccomp=unconfined"])).seccomp)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: security_opt seccomp: libseccomp is not installed" in done.stdout
    assert "seccomp=unconfined" in done.stdout and "unconfined: None" in done.stdout


@pytest.mark.parametrize(("machine", "arches"), [
    ("x86_64", {0xC000003E, 0x40000003}),  # AUDIT_ARCH_X86_64 (x32 too), AUDIT_ARCH_I386
    ("aarch64", {0xC00000B7, 0x40000028}),  # AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM
])
def test_the_default_profile_covers_each_machine_and_its_sub_architectures(machine,
                                                                          arches) -> None:
    """The program checks the architecture first (a syscall of one it does not know is
    killed) and knows the 32-bit sub-architecture too, as Docker's archMap asks."""
    import struct

    from pytest_pycontain.native import seccomp

    program = seccomp.compile_profile(seccomp.default_profile_text(), DEFAULT_CAPABILITIES,
                                      machine=machine)
    filters = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert filters[0] == (0x20, 0, 0, 4)  # ld [4]: seccomp_data.arch
    compared = {k for code, _jt, _jf, k in filters if code == 0x15}  # jeq #k
    assert arches <= compared
    other = {"x86_64": "aarch64", "aarch64": "x86_64"}[machine]
    assert program != seccomp.compile_profile(seccomp.default_profile_text(),
                                              DEFAULT_CAPABILITIES, machine=other)
    with pytest.raises(NotSupported, match="no profile architecture for riscv64"):
        seccomp.compile_profile(seccomp.default_profile_text(), DEFAULT_CAPABILITIES,
                                machine="riscv64")
