"""The contract every engine backend keeps (``engine.Container``), as one reusable suite.

A backend's test module subclasses ``EngineContract`` and provides three fixtures: ``engine``
(an ``engine.Engine``), ``busybox`` (an image of upstream's busybox shape: /bin/sh, applets,
/etc/passwd with root, nobody, www-data) and ``make_image`` (``busybox`` with a config
overridden: ``make_image(Healthcheck={...})``). ``tests/test_native_engine.py`` runs it on the
native engine; the Docker backend adds its own subclass, so the two cannot drift.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pytest_pycontain.engine import Container, ExecResult, RunSpec
from pytest_pycontain.errors import ContainerError, WaitTimeout
from pytest_pycontain.idmap import host_uid

SECOND = 1_000_000_000
# the addresses a container's resolver gives a name (none: an empty output)
LOOKUP = "nslookup {} | tail -n +3 | grep -o '[0-9]*\\.[0-9]*\\.[0-9]*\\.[0-9]*'"
# Reached: a few pings, stopping at the first answer (one packet lost on a loaded machine, or
# while a neighbour entry is made, is no verdict). Not reached: one ping, a second to answer.
REACH = "for i in 1 2 3 4 5; do ping -c 1 -W 2 {} && exit 0; done; exit 1"
PING_ONCE = "ping -c 1 -W 1 {}"
# the address the system resolver gives a name (/etc/hosts first, then DNS, as getaddrinfo asks):
# busybox ping prints it before it sends anything
RESOLVED = "ping -c 1 -W 1 {} 2>&1 | sed -n 's/^PING [^ ]* (\\([0-9.]*\\)).*/\\1/p'"
# the first lines of every /etc/hosts Docker writes (loopback and IPv6 names)
LOCAL_HOSTS = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
               "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
               "ff02::2\tip6-allrouters"]


class EngineContract:
    """Tests of ``engine.Container`` that hold for every backend."""

    @pytest.fixture
    def run(self, engine, busybox):
        made: list[Container] = []

        def run(image=None, **options) -> Container:
            container = engine.run(RunSpec(image=image or busybox, **options))
            made.append(container)
            return container

        yield run
        for container in made:
            container.remove()

    def test_runs_the_image_command_and_execs_in_it(self, run) -> None:
        container = run(command="sleep 1000")
        assert isinstance(container, Container)
        assert container.status == "running" and container.exit_code is None
        result = container.exec("echo hello")
        assert isinstance(result, ExecResult)
        assert (result.exit_code, result.output) == (0, "hello\n")
        code, output = container.exec(["cat", "/etc/hostname"])
        assert (code, output) == (0, container.hostname + "\n")

    def test_exec_separates_streams_and_keeps_their_order(self, run) -> None:
        container = run(command="sleep 1000")
        result = container.exec("echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three; "
                                "exit 3")
        assert result.exit_code == 3
        assert result.stdout == "one\nthree\n" and result.stderr == "two\n"
        assert result.output == "one\ntwo\nthree\n"

    def test_exec_options(self, run) -> None:
        container = run(command="sleep 1000", env={"FROM_RUN": "r"})
        result = container.exec("echo $FROM_RUN $FROM_EXEC; pwd; id -u; id -g",
                                env={"FROM_EXEC": "e"}, workdir="/tmp", user="nobody")
        assert result.output == "r e\n/tmp\n65534\n65534\n"
        assert container.exec("id -u; id -g", user="33:65534").output == "33\n65534\n"
        assert container.exec("cat", stdin="fed through stdin").output == "fed through stdin"
        big = b"x" * 300_000
        assert container.exec(["wc", "-c"], stdin=big).output.strip() == "300000"

    def test_exec_timeout(self, run) -> None:
        container = run(command="sleep 1000")
        with pytest.raises(WaitTimeout, match="did not finish within"):
            container.exec("echo started; sleep 30", timeout=0.3)
        assert container.exec("true").exit_code == 0

    def test_exec_of_a_missing_command(self, run) -> None:
        container = run(command="sleep 1000")
        result = container.exec(["no-such-command"])
        assert result.exit_code in (126, 127)
        assert "no-such-command" in result.output

    def test_logs_hold_both_streams_as_they_came(self, run) -> None:
        container = run(command="echo out; sleep 0.05; echo err >&2; sleep 0.05; echo end")
        assert container.wait(timeout=10) == 0
        assert container.status == "exited" and container.exit_code == 0
        assert container.logs() == "out\nerr\nend\n"

    def test_command_entrypoint_env_workdir_hostname(self, run) -> None:
        container = run(entrypoint=["/bin/sh", "-c"], command=["echo $0 $GREETING; pwd; hostname",
                                                               "argv0"],
                        env={"GREETING": "hi"}, workdir="/made/by/run", hostname="box")
        assert container.wait(timeout=10) == 0
        assert container.logs() == "argv0 hi\n/made/by/run\nbox\n"

    def test_image_config_is_honoured(self, run, make_image) -> None:
        image = make_image(Entrypoint=["/bin/sh", "-c"], Cmd=["echo $MODE; pwd; id -un"],
                           Env=["MODE=from-image", "PATH=/bin"], WorkingDir="/srv/app",
                           User="www-data")
        container = run(image)
        assert container.wait(timeout=10) == 0
        assert container.logs() == "from-image\n/srv/app\nwww-data\n"

    def test_a_user_with_group_names(self, run) -> None:
        container = run(command="id -u; id -g", user="nobody:www-data")
        container.wait(timeout=10)
        assert container.logs() == "65534\n33\n"

    def test_a_command_not_in_the_image(self, run) -> None:
        with pytest.raises(ContainerError, match="executable file not found in \\$PATH") as info:
            run(command=["no-such-command", "arg"])
        assert info.value.exit_code == 127
        assert '"no-such-command"' in str(info.value)

    def test_the_path_search_passes_over_what_cannot_run(self, run, tmp_path: Path) -> None:
        """PATH is searched as execvp does, for PID 1 and for exec: a directory of the
        command's name and a file without execute permission are passed over; with nothing
        runnable found, the exec fails with 126 (runc says "not found in $PATH", execvp
        "permission denied")."""
        path = {"PATH": "/opt/a:/opt/b:/opt/c:/bin"}
        mounts = [f"{path_search_tree(tmp_path)}:/opt:ro"]
        first = run(command=["tool", "pid1"], env=path, mounts=mounts)
        assert first.wait(timeout=10) == 0
        assert first.logs() == "owner pid1\n"
        running = run(command="sleep 1000", env=path, mounts=mounts)
        assert running.exec(["tool", "exec"]).output == "owner exec\n"
        missing = running.exec(["tool"], env={"PATH": "/opt/a:/opt/b"})
        assert missing.exit_code == 126 and '"tool"' in missing.output

    def test_an_unknown_user(self, run) -> None:
        with pytest.raises(ContainerError, match="unable to find user nosuchuser"):
            run(command="true", user="nosuchuser")

    def test_an_entrypoint_that_exits_at_once(self, run) -> None:
        container = run(command="echo starting up; echo cannot bind >&2; exit 3")
        assert container.wait(timeout=10) == 3
        with pytest.raises(ContainerError, match="exited with code 3") as info:
            container.exec("true")
        assert info.value.exit_code == 3
        assert "cannot bind" in info.value.logs and "cannot bind" in str(info.value)

    def test_kill_and_stop(self, run) -> None:
        sleeper = run(command=["sleep", "1000"])  # PID 1 without a handler ignores SIGTERM
        sleeper.stop(timeout=0.2)
        assert sleeper.exit_code == 128 + signal.SIGKILL
        trapping = run(command="trap 'echo bye; exit 3' TERM; echo up; "
                               "while true; do sleep 0.05; done")
        _wait_for_log(trapping, "up")
        trapping.stop(timeout=10)
        assert trapping.exit_code == 3 and "bye" in trapping.logs()
        killed = run(command=["sleep", "1000"])
        killed.kill(signal.SIGKILL)
        assert killed.wait(timeout=10) == 128 + signal.SIGKILL

    def test_stop_signal_of_the_image(self, run, make_image) -> None:
        image = make_image(StopSignal="SIGUSR1",
                           Cmd=["/bin/sh", "-c", "trap 'exit 7' USR1; echo up; "
                                                 "while true; do sleep 0.05; done"])
        container = run(image)
        _wait_for_log(container, "up")
        container.stop(timeout=10)
        assert container.exit_code == 7

    def test_stop_signal_of_the_run_request(self, run) -> None:
        """``stop_signal`` replaces the image's, as ``docker run --stop-signal`` does; a bad
        one is a ConfigError naming it."""
        from pytest_pycontain.errors import ConfigError

        container = run(command="trap 'exit 9' USR2; echo up; while true; do sleep 0.05; done",
                        stop_signal="usr2")
        _wait_for_log(container, "up")
        container.stop(timeout=10)
        assert container.exit_code == 9
        with pytest.raises(ConfigError, match=r"stop_signal: 'SIGNOPE': not a signal name"):
            run(command="true", stop_signal="SIGNOPE")

    def test_labels_over_the_image_labels(self, run, make_image) -> None:
        """``labels`` go over the image's, as ``docker run --label`` does; the engine's own
        are not shown, and a user cannot set them."""
        from pytest_pycontain.errors import ConfigError

        image = make_image(Labels={"from": "image", "team": "image's"})
        container = run(image, command="sleep 1000", labels=["team=db", "tier=1"])
        assert dict(container.labels) == {"from": "image", "team": "db", "tier": "1"}
        with pytest.raises(ConfigError, match=r"labels: 'pycontain.x': labels under "):
            run(command="true", labels={"pycontain.x": "1"})

    def test_wait_times_out(self, run) -> None:
        container = run(command="sleep 1000")
        with pytest.raises(WaitTimeout):
            container.wait(timeout=0.1)

    def test_init_reaps_and_forwards_signals(self, run) -> None:
        container = run(command=["sleep", "1000"], init=True)
        assert container.exec("cat /proc/1/cmdline | tr '\\0' ' '").output != "sleep 1000 "
        container.exec("sh -c 'sleep 0 & exit 0'")  # leaves an orphan for init to reap
        time.sleep(0.1)
        states = container.exec("cat /proc/[0-9]*/stat | cut -d' ' -f3").output.split()
        assert "Z" not in states
        container.stop(timeout=10)  # SIGTERM forwarded to sleep, which dies of it
        assert container.exit_code == 128 + signal.SIGTERM

    def test_copy_to_and_from(self, run, tmp_path: Path) -> None:
        container = run(command="sleep 1000")
        (tmp_path / "tree" / "sub").mkdir(parents=True)
        (tmp_path / "tree" / "sub" / "file.txt").write_text("content\n")
        (tmp_path / "single").write_text("one file\n")
        container.copy_to(tmp_path / "tree", "/tmp")
        container.copy_to(tmp_path / "single", "/etc/single.conf")
        assert container.exec("cat /tmp/tree/sub/file.txt /etc/single.conf").output == (
            "content\none file\n")
        container.exec("mkdir -p /out && echo made inside > /out/result")
        container.copy_from("/out", tmp_path / "back")
        assert (tmp_path / "back" / "result").read_text() == "made inside\n"
        container.copy_from("/out/result", tmp_path)
        assert (tmp_path / "result").read_text() == "made inside\n"
        with pytest.raises(FileNotFoundError, match="/no/such"):
            container.copy_from("/no/such", tmp_path)

    def test_copy_resolves_planted_symlinks_inside_the_root(self, run, tmp_path: Path) -> None:
        """Symlinks the container planted (absolute and ``../`` forms, on the way or at the end
        of a path) resolve inside the container, as ``docker cp`` resolves them: nothing is read
        or written on the host through them (the class of CVE-2018-15664). The host directory
        ``outside`` exists in the container too, with its own file, so every copy has an
        in-container answer to give."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_text("host secret\n")
        rel = "../" * 12 + str(outside).lstrip("/")
        container = run(command="sleep 1000")
        planted = container.exec(
            f"mkdir -p {outside} /plant /dst && echo container secret > {outside}/secret && "
            f"ln -s {outside} /plant/abs && ln -s {rel} /plant/rel && "
            f"ln -s {outside} /dst/tree && ln -s {outside}/secret /plant/file")
        assert planted.exit_code == 0, planted.output
        (tmp_path / "f").write_text("written\n")
        (tmp_path / "tree").mkdir()
        (tmp_path / "tree" / "x").write_text("in tree\n")
        container.copy_to(tmp_path / "f", "/plant/abs/f1")  # an absolute link on the way
        container.copy_to(tmp_path / "f", "/plant/rel/f2")  # a ../ link on the way
        container.copy_to(tmp_path / "f", "/plant/abs")  # the destination: a link to a dir
        container.copy_to(tmp_path / "tree", "/dst")  # /dst/tree is a link: replaced, not used
        assert sorted(os.listdir(outside)) == ["secret"]
        assert (outside / "secret").read_text() == "host secret\n"
        seen = container.exec(f"cd {outside} && ls && cat f1 f2 f secret && "
                              "test -d /dst/tree && ! test -L /dst/tree && cat /dst/tree/x")
        assert seen.output == ("f\nf1\nf2\nsecret\nwritten\nwritten\nwritten\n"
                               "container secret\nin tree\n"), seen.output
        back = tmp_path / "back"
        back.mkdir()
        container.copy_from("/plant/abs/secret", back / "s1")
        container.copy_from("/plant/rel/secret", back / "s2")
        assert (back / "s1").read_text() == (back / "s2").read_text() == "container secret\n"
        container.copy_from("/plant", back)  # links come out as links, not followed
        assert os.readlink(back / "plant" / "abs") == str(outside)
        assert os.readlink(back / "plant" / "rel") == rel
        assert os.readlink(back / "plant" / "file") == f"{outside}/secret"
        # a second copy where the container turned the links into directories must not
        # write through the links the first one left on the host
        assert container.exec("cd /plant && rm abs rel file && mkdir abs rel && "
                              "echo over > abs/secret && echo over > rel/secret && "
                              "echo over > file").exit_code == 0
        container.copy_from("/plant", back)
        assert sorted(os.listdir(outside)) == ["secret"]
        assert (outside / "secret").read_text() == "host secret\n"
        assert (back / "plant" / "abs" / "secret").read_text() == "over\n"
        assert (back / "plant" / "file").read_text() == "over\n"

    def test_mounts_tmpfs_and_read_only(self, run, tmp_path: Path) -> None:
        (tmp_path / "rw").mkdir()
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro" / "given").write_text("from host\n")
        container = run(command="sleep 1000", read_only=True, tmpfs={"/scratch": "size=1m"},
                        mounts=[f"{tmp_path / 'rw'}:/data", f"{tmp_path / 'ro'}:/config:ro"])
        assert container.exec("echo written > /data/out").exit_code == 0
        assert (tmp_path / "rw" / "out").read_text() == "written\n"
        assert container.exec("cat /config/given").output == "from host\n"
        assert container.exec("touch /config/nope").exit_code != 0
        assert container.exec("touch /rootfs-is-read-only").exit_code != 0
        assert container.exec("echo ok > /scratch/x && cat /scratch/x").output == "ok\n"
        assert "/scratch" in container.exec("grep tmpfs /proc/mounts").output

    def test_published_ports_in_each_form(self, run) -> None:
        """Ports as ``[p]``, ``{p: None}``, ``{"p/tcp": host}``: the run request gives every
        backend the same map, and each publishes it the same way."""
        from urllib.request import urlopen

        from pytest_pycontain import wait
        from testenv.registry import free_port

        fixed = free_port()
        container = run(command="httpd -p 8081 -h /etc; exec httpd -f -p 8080 -h /etc",
                        ports={8080: None, "8081/tcp": str(fixed)})
        listed = run(command="exec httpd -f -p 9090 -h /etc", ports=[9090])
        wait.until_ready(container, wait.all(wait.port(8080), wait.port(8081)), 60)
        wait.until_ready(listed, wait.port(9090), 60)
        assert container.address(8081)[1] == fixed
        for box, published in ((container, container.address(8080)),
                               (container, container.address(8081)),
                               (listed, listed.address(9090))):
            with urlopen(f"http://{published[0]}:{published[1]}/hostname", timeout=30) as answer:
                assert answer.read().decode() == box.hostname + "\n"

    def test_own_network_namespace_with_loopback(self, run) -> None:
        container = run(command="sleep 1000")
        assert container.exec("ls /sys/class/net").output.split() == ["lo"]
        assert "UP" in container.exec("ip link show lo").output

    def test_healthcheck(self, run, make_image) -> None:
        check = {"Interval": SECOND // 20, "Timeout": SECOND, "Retries": 2}
        good = run(make_image(Healthcheck={**check, "Test": ["CMD-SHELL", "test -e /tmp/ready"]},
                              Cmd=["sh", "-c", "sleep 0.2; touch /tmp/ready; sleep 1000"]))
        bad = run(make_image(Healthcheck={**check, "Test": ["CMD", "false"]},
                             Cmd=["sleep", "1000"]))
        assert good.health == "starting"
        _until(lambda: good.health == "healthy" and bad.health == "unhealthy")

    def test_health_starts_over_when_started_again(self, run, make_image) -> None:
        """An image's HEALTHCHECK after ``start()``: probed again, the status of the run
        before not kept (its command removes what the check looks for, at every start)."""
        check = {"Interval": SECOND // 20, "Timeout": SECOND, "Retries": 2}
        box = run(make_image(Healthcheck={**check, "Test": ["CMD", "test", "-e", "/tmp/ok"]},
                             Cmd=["sh", "-c", "rm -f /tmp/ok; exec sleep 1000"]))
        _until(lambda: box.health == "unhealthy")
        assert box.exec("touch /tmp/ok").exit_code == 0
        _until(lambda: box.health == "healthy")
        box.kill()
        box.wait(10)
        box.start()
        _until(lambda: box.health == "unhealthy")
        assert box.exec("touch /tmp/ok").exit_code == 0
        _until(lambda: box.health == "healthy")

    def test_remove(self, engine, busybox) -> None:
        container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
        container.remove()
        assert container.status == "removed"
        container.remove()  # twice is fine


    def test_network_faults(self, engine, busybox) -> None:
        """Partitions, loss and delay, undone again, and the same errors: one fault state on
        every backend (the native engine shapes what a member receives, Docker what it sends;
        a round trip sees either alike)."""
        from pytest_pycontain.errors import NetworkError, NotSupported

        fetch = "printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' | nc -w 2 server 8080"
        net = engine.network()
        made: list[Container] = []
        try:
            made.append(server := engine.run(RunSpec(
                image=busybox, name="server", network=net,
                command="echo pong > /tmp/ping; exec httpd -f -p 8080 -h /tmp")))
            made.append(client := engine.run(RunSpec(image=busybox, name="client", network=net,
                                                     command="sleep 1000")))
            made.append(loner := engine.run(RunSpec(image=busybox, command="sleep 1000")))
            _until(lambda: server.probe_port(8080))
            assert client.exec(fetch).stdout.endswith("pong\n")

            net.partition(client, server)
            net.partition(server, client)  # in place already: nothing changes
            assert client.exec(fetch, timeout=10).exit_code != 0
            assert server.exec(PING_ONCE.format(client.ip)).exit_code != 0
            net.heal()
            net.heal()
            assert client.exec(fetch).stdout.endswith("pong\n")

            net.loss(client, 100)
            assert client.exec(PING_ONCE.format(server.ip)).exit_code != 0
            assert server.exec(PING_ONCE.format(client.ip)).exit_code != 0
            net.loss(client, 0)
            assert client.exec(REACH.format(server.ip)).exit_code == 0

            try:
                net.delay(client, 200, jitter_ms=0)
            except NotSupported as exc:
                pytest.skip(f"this kernel cannot delay packets: {exc}")
            rtt = client.exec(REACH.format(server.ip))
            assert rtt.exit_code == 0 and _ping_ms(rtt.stdout) >= 200, rtt.output
            net.delay(client, 0)
            assert client.exec(REACH.format(server.ip)).exit_code == 0

            for call, message in [
                (lambda: net.partition(client, client), "from itself"),
                (lambda: net.delay(client, -1), r"delay: ms and jitter_ms must be >= 0, got -1, 0"),
                (lambda: net.loss(client, 120),
                 r"loss: percent must be between 0 and 100, got 120"),
                (lambda: net.delay(loner, 100), "is not on network"),
                (lambda: net.partition(client, loner), "is not on network"),
            ]:
                with pytest.raises(NetworkError, match=message):
                    call()
        finally:
            for container in made:
                container.remove()
            net.remove()

    # --- published ports and networks, as Docker has them (issue: real service images) ---

    SERVE = ("mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\n"
             "echo\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer"
             " && echo pong > /www/ping && httpd -p 127.0.0.1:8081 -h /www"
             " && exec httpd -f -p 8080 -h /www")

    def test_published_ports_reach_the_interface_not_loopback(self, run) -> None:
        """Without a network a container with ports gets one: the server sees a peer that is
        not loopback (no ``127.0.0.1 trust`` lets the test in), and a server bound to the
        container's loopback only is not reached through its published port."""
        import ipaddress

        container = run(command=self.SERVE, ports=[8080, 8081])
        _until(lambda: container.probe_port(8080) and container.probe_port(8081))
        assert _http_get(container.address(8080), "/ping") == "pong\n"
        peer = _http_get(container.address(8080), "/cgi-bin/peer").strip()
        peer = peer.strip("[]").removeprefix("::ffff:")  # busybox httpd listens on IPv6 too
        assert not ipaddress.ip_address(peer).is_loopback, peer
        assert peer != container.ip
        assert container.exec("ls /sys/class/net").output.split() == ["eth0", "lo"]
        assert container.exec("wget -qO- http://127.0.0.1:8081/ping").output == "pong\n"
        with pytest.raises(OSError):  # reset, closed with nothing said, or refused
            _http_get(container.address(8081), "/ping", timeout=5)

    def test_loss_and_delay_act_on_the_tests_own_connection(self, engine, run) -> None:
        net = engine.network()
        container = None
        try:
            container = run(command=self.SERVE, network=net, ports=[8080])
            _until(lambda: container.probe_port(8080))
            assert _http_get(container.address(8080), "/ping") == "pong\n"
            net.loss(container, 100)
            with pytest.raises(TimeoutError):
                _http_get(container.address(8080), "/ping", timeout=2)
            net.loss(container, 0)
            assert _http_get(container.address(8080), "/ping", timeout=10) == "pong\n"
            from pytest_pycontain.errors import NotSupported

            try:
                net.delay(container, 300)
            except NotSupported as exc:
                pytest.skip(f"this kernel cannot delay packets: {exc}")
            started = time.monotonic()
            assert _http_get(container.address(8080), "/ping", timeout=10) == "pong\n"
            assert time.monotonic() - started >= 0.3  # the delay is on the test's own path
            net.delay(container, 0)
        finally:
            if container is not None:
                container.remove()
            net.remove()

    def test_an_exited_container_leaves_its_networks_at_once(self, engine, run) -> None:
        """Kill app, start a new app under the same name and alias: peers resolve the new
        one; while none runs, nobody resolves the name."""
        net = engine.network()
        made: list[Container] = []
        try:
            made.append(app := run(name="app", aliases=["web"], network=net,
                                   command="sleep 1000"))
            made.append(peer := run(name="peer", network=net, command="sleep 1000"))
            assert peer.exec(LOOKUP.format("app"), timeout=20).output.split() == [app.ip]
            app.kill()
            app.wait(10)
            for name in ("app", "web"):
                assert peer.exec(LOOKUP.format(name), timeout=20).output.split() == []
            made.append(again := run(name="app", aliases=["web"], network=net,
                                     command="sleep 1000"))
            for name in ("app", "web"):
                assert peer.exec(LOOKUP.format(name), timeout=20).output.split() == [again.ip]
            crash = run(name="crash", network=net, command="exit 3")  # nobody asks it
            made.append(crash)
            _until(lambda: peer.exec(LOOKUP.format("crash"), timeout=20).output.split() == [])
            made.append(run(name="crash", network=net, command="sleep 1000"))
        finally:
            for container in made:
                container.remove()
            net.remove()

    def test_peers_resolve_a_replaced_container_at_its_new_address(self, engine, run) -> None:
        """Names of peers come from the network's DNS, never from a copy in /etc/hosts (which
        the system resolver reads first, and which would outlive them): "app" removed, its
        address taken by another, a new "app" elsewhere -- a peer that was there before
        resolves its name and alias to the new one and reaches it; a member resolves a peer
        that joined after it."""
        serve = "mkdir /www && echo {} > /www/who && exec httpd -f -p 8080 -h /www"
        fetch = "printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 5 app 8080 | tail -n 1"
        net = engine.network()
        made: list[Container] = []
        try:
            made.append(app := run(name="app", aliases=["web"], network=net,
                                   command=serve.format("old")))
            made.append(peer := run(name="peer", network=net, command="sleep 1000"))
            old = app.ip
            assert peer.exec(RESOLVED.format("app")).output.split() == [old]
            app.remove()
            made.append(run(network=net, command="sleep 1000"))  # may take the old address
            made.append(again := run(name="app", aliases=["web"], network=net,
                                     command=serve.format("new")))
            assert again.ip != old
            for name in ("app", "web"):
                assert peer.exec(RESOLVED.format(name)).output.split() == [again.ip], name
            _until(lambda: again.probe_port(8080))
            assert peer.exec(fetch, timeout=20).output == "new\n"
            made.append(late := run(name="late", network=net, command="sleep 1000"))
            assert peer.exec(RESOLVED.format("late")).output.split() == [late.ip]
            assert late.exec(REACH.format("peer")).exit_code == 0
        finally:
            for container in made:
                container.remove()
            net.remove()

    def test_etc_hosts_holds_the_container_itself(self, engine, run) -> None:
        """/etc/hosts as Docker writes it for a member of a network: loopback and IPv6
        names, ``extra_hosts``, then its own address under its hostname (not its name or
        aliases, nor any peer: those are the network's DNS's); one line more for each network
        it is connected to later; a dotted hostname also under its first label."""
        front, back = engine.network(), engine.network()
        made: list[Container] = []

        def entries(container: Container) -> list[str]:
            lines = container.exec("cat /etc/hosts").output.splitlines()
            assert lines[:len(LOCAL_HOSTS)] == LOCAL_HOSTS
            return lines[len(LOCAL_HOSTS):]

        try:
            made.append(peer := run(name="peer", network=front, command="sleep 1000"))
            made.append(app := run(name="app", aliases=["web"], network=front,
                                   extra_hosts={"db": "10.0.0.5"}, command="sleep 1000"))
            assert entries(app) == ["10.0.0.5\tdb", f"{app.ip}\t{app.hostname}"]
            assert entries(peer) == [f"{peer.ip}\t{peer.hostname}"]
            back.connect(app, aliases=["api"])
            second = app.exec("ip -4 -o addr show eth1").output.split()[3].split("/")[0]
            assert entries(app) == ["10.0.0.5\tdb", f"{app.ip}\t{app.hostname}",
                                    f"{second}\t{app.hostname}"]
            app.stop(timeout=1)
            app.start()  # written again, for the addresses of the moment
            own = app.exec("ip -4 -o addr show | awk '$2 != \"lo\" {print $4}'").output
            assert sorted(entries(app)) == sorted(
                ["10.0.0.5\tdb"] + [f"{cidr.split('/')[0]}\t{app.hostname}"
                                    for cidr in own.split()])
            assert len(own.split()) == 2
            made.append(dotted := run(network=front, hostname="box.example.test",
                                      command="sleep 1000"))
            assert entries(dotted) == [f"{dotted.ip}\tbox.example.test box"]
        finally:
            for container in made:
                container.remove()
            front.remove()
            back.remove()

    def test_a_stopped_container_starts_again_as_itself(self, engine, run) -> None:
        """``start()`` as ``docker start``: the same id and name, a file written before the
        stop still there, a named volume's data too; its name and aliases resolve from peers
        on both its networks again, its published port answers again. A running container is
        left as it is."""
        from pytest_pycontain import wait

        front, back = engine.network(), engine.network()
        volume = engine.volume()
        made: list[Container] = []
        try:
            made.append(app := run(name="app", aliases=["web"], network=front, ports=[8080],
                                   volumes={volume: "/data"},
                                   command="echo run >> /tmp/runs; exec httpd -f -p 8080 -h /tmp"))
            made.append(peer := run(name="peer", network=front, command="sleep 1000"))
            made.append(other := run(name="other", network=back, command="sleep 1000"))
            back.connect(app, aliases=["api"])
            wait.until_ready(app, wait.port(8080), 60)
            assert app.exec("echo kept > /tmp/file; echo vol > /data/v").exit_code == 0
            ident, name = app.id, app.name
            app.start()  # running: nothing happens
            assert app.exec("cat /tmp/runs").output == "run\n"
            app.stop(timeout=1)
            assert app.status == "exited"
            assert peer.exec(LOOKUP.format("web"), timeout=20).output.split() == []
            app.start()
            assert (app.id, app.name, app.status, app.exit_code) == (ident, name, "running",
                                                                      None)
            assert app.exec("cat /tmp/file /tmp/runs /data/v").output == "kept\nrun\nrun\nvol\n"
            for name in ("app", "web"):
                assert peer.exec(LOOKUP.format(name), timeout=20).output.split() == [app.ip]
            for name in ("app", "api"):
                assert other.exec(REACH.format(name)).exit_code == 0, name
            assert app.exec(REACH.format("other")).exit_code == 0
            wait.until_ready(app, wait.port(8080), 60)
            assert _http_get(app.address(8080), "/file") == "kept\n"
        finally:
            for container in made:
                container.remove()
            front.remove()
            back.remove()
            volume.remove()

    def test_start_of_a_command_now_gone_and_of_a_removed_container(self, engine,
                                                                     run) -> None:
        """A container whose command is gone from its files cannot start again: a clear
        error naming the command, it stays stopped and off its network (its name free of
        peers' answers), and it is removed as any other; starting a removed one is an error."""
        net = engine.network()
        made: list[Container] = []
        try:
            made.append(box := run(name="broken", network=net, ports=[8080],
                                   command=["/bin/sh", "-c", "rm /bin/sh; exec sleep 1000"]))
            made.append(peer := run(name="peer", network=net, command="sleep 1000"))
            _until(lambda: box.exec(["ls", "/bin/sh"]).exit_code != 0)
            box.stop(timeout=1)
            with pytest.raises(ContainerError, match="/bin/sh"):
                box.start()
            assert box.status != "running"
            assert peer.exec(LOOKUP.format("broken"), timeout=20).output.split() == []
            box.remove()
            assert box.status == "removed"
            with pytest.raises(ContainerError, match="removed"):
                box.start()
        finally:
            for container in made:
                container.remove()
            net.remove()

    def test_the_privilege_boundary_and_its_options(self, run) -> None:
        """Docker's 14 capabilities and its seccomp filter by default, for PID 1 and exec; the
        options loosen or tighten them as ``docker run``'s flags (tests/test_security.py
        probes the whole boundary on both backends)."""
        status = "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status"
        default = run(command=f"{status}; sleep 1000")
        _wait_for_log(default, "Seccomp")
        expected = ["CapEff:", "00000000a80425fb", "CapBnd:", "00000000a80425fb",
                    "NoNewPrivs:", "0", "Seccomp:", "2"]
        assert default.logs().split() == expected
        assert default.exec(status).output.split() == expected
        assert default.exec(status, user="nobody").output.split()[:2] == [
            "CapEff:", "0000000000000000"]
        tight = run(command="sleep 1000", cap_drop=["ALL"], cap_add=["cap_kill"],
                    security_opt=["no-new-privileges", "seccomp=unconfined"],
                    sysctls={"kernel.shmmni": "99"})
        assert tight.exec(f"{status}; cat /proc/sys/kernel/shmmni").output.split() == [
            "CapEff:", "0000000000000020", "CapBnd:", "0000000000000020",
            "NoNewPrivs:", "1", "Seccomp:", "0", "99"]
        assert tight.exec("mount -t tmpfs none /mnt").exit_code != 0

    def test_shm_size_extra_hosts_and_the_default_hostname(self, run) -> None:
        """/dev/shm is 64m unless asked (Docker's default), ``extra_hosts`` are /etc/hosts
        lines, and a container without ``hostname`` is called by its id's first 12 characters
        even when it has a name, so two replicas of "app" report different hosts."""
        shm = "awk '$2 == \"/dev/shm\" {print $4}' /proc/mounts | tr , '\\n' | grep ^size="
        default = run(command="sleep 1000", name="app")
        assert default.exec(shm).output == "size=65536k\n"
        assert default.hostname == default.id[:12]
        assert default.exec("hostname").output == default.id[:12] + "\n"
        asked = run(command="sleep 1000", shm_size="128m",
                    extra_hosts={"db": "10.0.0.5", "v6.test": "fd00::7"})
        assert asked.exec(shm).output == "size=131072k\n"
        lookup = "awk '$2 == \"db\" || $2 == \"v6.test\" {print $2, $1}' /etc/hosts"
        assert asked.exec(lookup).output == "db 10.0.0.5\nv6.test fd00::7\n"
        # the container may fill /dev/shm up to its size, and no further
        assert asked.exec("head -c 1048576 /dev/zero > /dev/shm/a").exit_code == 0
        assert default.exec("head -c 70000000 /dev/zero > /dev/shm/big").exit_code != 0

    def test_its_own_cgroups_are_seen_inside(self, run) -> None:
        """The container's cgroup filesystem at /sys/fs/cgroup (read-only), where JVMs, Go and
        Node read their memory limit: the limit asked for, else none; and the cgroup holds the
        container's processes alone (PID 1 and the exec), not the test process's."""
        if host_uid() != 0:
            pytest.skip("rootless mode has no cgroups without a delegated cgroup v2 subtree: "
                        "limits are NotSupported there (tests/test_rootless.py checks it)")
        memory = ("cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        limited = run(command="sleep 1000", memory="256m")
        assert limited.exec(memory).output == f"{256 * 1024 * 1024}\n"
        unlimited = run(command="sleep 1000")
        assert unlimited.exec(memory).output in ("max\n", "9223372036854771712\n")
        procs = ("cat /sys/fs/cgroup/cgroup.procs 2>/dev/null || "
                 "cat /sys/fs/cgroup/pids/cgroup.procs")
        for container in (limited, unlimited):
            listed = container.exec(f"({procs}) | sort -n | head -1; ({procs}) | wc -l").output
            first, count = listed.split()
            assert first == "1" and 2 <= int(count) <= 4, listed  # PID 1, sh, cat (and sort)
        write = ("if [ -e /sys/fs/cgroup/memory.max ]; then echo 1 > /sys/fs/cgroup/memory.max; "
                 "else echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes; fi")
        assert limited.exec(write).exit_code != 0
        assert limited.exec(memory).output == f"{256 * 1024 * 1024}\n"

    def test_image_volumes_get_anonymous_volumes(self, run, make_image) -> None:
        """Every image VOLUME gets a volume of its own: seeded from the image's content there
        and owned as the image's directory (a path the image lacks: root's, 0755), writable
        even when the root is read-only, with /etc/hosts and friends still in place."""
        image = make_image(Volumes={"/etc": {}, "/data": {}})
        box = run(image, command="sleep 1000", read_only=True)
        plain = run(command="sleep 1000")
        assert box.exec("head -1 /etc/passwd").output == "root:x:0:0:root:/root:/bin/sh\n"
        assert box.exec("cat /etc/hostname").output == box.hostname + "\n"
        mounted = box.exec("awk '{print $2}' /proc/mounts").output.split()
        assert "/etc" in mounted and "/data" in mounted
        owner = "stat -c '%u:%g %a' /etc"
        assert box.exec(owner).output == plain.exec(owner).output
        assert box.exec("stat -c '%u:%g %a' /data").output == "0:0 755\n"
        result = box.exec("echo kept > /etc/new && echo more > /data/x && cat /etc/new /data/x")
        assert (result.exit_code, result.output) == (0, "kept\nmore\n")
        assert box.exec("touch /elsewhere").exit_code != 0
        # another container of the image gets volumes of its own
        other = run(image, command="sleep 1000")
        assert other.exec("ls /data; test -e /etc/new || echo fresh").output == "fresh\n"

    def test_named_volumes_outlive_their_container(self, engine, run) -> None:
        """A named volume keeps what one container wrote for the next (by the Volume or its
        name, read-only if asked), is seeded from the image when new, and goes when removed."""
        volume = engine.volume("shared-data")
        made = []
        try:
            first = run(command="sleep 1000", volumes={volume: "/srv/data"})
            made.append(first)
            assert first.exec("echo hello > /srv/data/file").exit_code == 0
            first.remove()
            second = run(command="sleep 1000", volumes=["shared-data:/in:ro"])
            made.append(second)
            assert engine.find_volume("shared-data") is volume
            assert second.exec("cat /in/file").output == "hello\n"
            assert second.exec("touch /in/other").exit_code != 0
            seeded = run(command="sleep 1000", volumes={"seeded-etc": "/etc"})
            made.append(seeded)
            assert seeded.exec("head -1 /etc/passwd").output == "root:x:0:0:root:/root:/bin/sh\n"
        finally:
            for container in made:
                container.remove()
            volume.remove()
            engine.volume("seeded-etc").remove()
        assert engine.find_volume("shared-data") is None

    def test_a_new_read_only_volume_is_seeded_and_refuses_writes(self, engine, run) -> None:
        """Docker's answer: a new named volume mounted read-only is still seeded from the
        image's content there (/etc, with the mount points of /etc/hosts and friends, as
        Docker's init layer has them), and a write there is the command's own "Read-only file
        system": Docker refuses nothing."""
        made: list[Container] = []
        try:
            made.append(box := run(command="sleep 1000", volumes=["ro-etc:/etc:ro"]))
            assert box.exec("head -1 /etc/passwd").output == "root:x:0:0:root:/root:/bin/sh\n"
            assert box.exec("cat /etc/hostname").output == box.hostname + "\n"
            wrote = box.exec("touch /etc/new")
            assert wrote.exit_code == 1 and "Read-only file system" in wrote.output, wrote
        finally:
            for container in made:
                container.remove()
            if (volume := engine.find_volume("ro-etc")) is not None:
                volume.remove()

    def test_a_read_only_volume_where_the_image_writes(self, engine, run, make_image) -> None:
        """The image's command writes where a volume is mounted read-only: the container
        exits of it, and a wait on it (or an exec into it) is a ContainerError naming the
        container, the volume option and the path, with the log tail."""
        from pytest_pycontain.wait import log, until_ready

        made: list[Container] = []
        try:
            image = make_image(Volumes={"/data": {}}, Cmd=["sh", "-c", "echo x > /data/x && "
                                                                      "exec sleep 1000"])
            made.append(writer := run(image, name="writer", volumes=["ro-data:/data:ro"]))
            with pytest.raises(ContainerError) as caught:
                until_ready(writer, log("never said"), 30)
            said = str(caught.value)
            assert "container writer exited with status 1" in said, said
            assert ("volumes: 'ro-data:/data:ro' mounts /data read-only" in said), said
            assert "can't create /data/x: Read-only file system" in caught.value.logs
            with pytest.raises(ContainerError, match=r"writer .*exited with code 1 \(volumes: "
                                                     r"'ro-data:/data:ro' mounts /data read-only"):
                writer.exec("true")
        finally:
            for container in made:
                container.remove()
            if (volume := engine.find_volume("ro-data")) is not None:
                volume.remove()

    def test_anonymous_nocopy_and_shared_volumes(self, engine, run, make_image) -> None:
        """A ``VolumeMount`` without a source is the container's own (empty, gone with it);
        ``nocopy`` leaves a new volume empty where the image has content; a shared volume
        outlives the engine's books, is the same one when asked again, and ``create=False``
        of a missing one is a ConfigError naming it."""
        import secrets

        from pytest_pycontain.errors import ConfigError
        from pytest_pycontain.runspec import VolumeMount

        image = make_image()  # busybox: /etc has content
        own = run(image, command="sleep 1000", volumes=[VolumeMount(None, "/anon")])
        assert own.exec("ls -A /anon; touch /anon/x").exit_code == 0
        other = run(image, command="sleep 1000", volumes=[VolumeMount(None, "/anon")])
        assert other.exec("ls -A /anon").output == ""
        quiet = run(image, command="sleep 1000", volumes=[
            VolumeMount(f"quiet-{secrets.token_hex(3)}", "/etc", nocopy=True)])
        assert quiet.exec("ls -A /etc | grep -c passwd").output == "0\n"
        name = f"contract-shared-{secrets.token_hex(4)}"
        with pytest.raises(ConfigError, match=f"volume '{name}' does not exist"):
            engine.shared_volume(name, create=False)
        shared = engine.shared_volume(name)
        try:
            assert engine.shared_volume(name, create=False) is shared
            writer = run(image, command="sh -c 'echo kept > /v/file'", volumes={shared: "/v"})
            assert writer.wait(timeout=30) == 0
            reader = run(image, command="sleep 1000", volumes=[VolumeMount(shared, "/v", True)])
            assert reader.exec("cat /v/file").output == "kept\n"
            reader.remove()
            writer.remove()
        finally:
            shared.remove()
        with pytest.raises(ConfigError, match=f"volume '{name}' does not exist"):
            engine.shared_volume(name, create=False)

    def test_host_gateway_is_the_network_gateway(self, engine, run) -> None:
        """``extra_hosts`` value ``host-gateway``: an address of the host (Docker: its default
        bridge's gateway; native: the container's network's gateway, where
        ``host.pycontain.internal`` is); tests/test_compose_volumes.py reaches the test
        process through it on both."""
        import ipaddress

        net = engine.network()
        try:
            box = run(command="sleep 1000", network=net, extra_hosts=["gw:host-gateway"])
            found = box.exec("awk '$2 == \"gw\" {print $1}' /etc/hosts").output.split()
            assert len(found) == 1 and ipaddress.ip_address(found[0]).version == 4, found
            box.remove()
        finally:
            net.remove()

    def test_bad_volumes_are_refused_by_name(self, engine, run, make_image) -> None:
        from pytest_pycontain.errors import ConfigError

        for bad in ({"x": "/data"}, {"no spaces": "/data"}, ["-dash:/data"]):
            with pytest.raises(ConfigError, match=r"volumes: .*not a valid volume name"):
                run(command="true", volumes=bad)
        with pytest.raises(ConfigError, match=r"volumes: 'data:relative': .* must be absolute"):
            run(command="true", volumes=["data:relative"])
        with pytest.raises(ConfigError, match=r"volume: 'a b': not a valid volume name"):
            engine.volume("a b")
        # a VOLUME where the image has a file: the container does not start, and says why
        with pytest.raises(ContainerError,
                           match=r"filebox.*cannot mount volume over existing file"):
            run(make_image(Volumes={"/etc/passwd": {}}), name="filebox", command="true")

    def test_bad_shm_size_and_extra_hosts_are_refused_by_name(self, run) -> None:
        from pytest_pycontain.errors import ConfigError

        with pytest.raises(ConfigError, match=r"extra_hosts: db='10\.0\.0\.999': not an IPv4"):
            run(command="true", extra_hosts={"db": "10.0.0.999"})
        with pytest.raises(ConfigError, match=r"extra_hosts: 'db': expected 'NAME:ADDRESS'"):
            run(command="true", extra_hosts=["db"])
        with pytest.raises(ConfigError, match=r"shm_size: 'lots': expected bytes"):
            run(command="true", shm_size="lots")


    def test_a_running_container_joins_a_second_network(self, engine, run) -> None:
        """``Network.connect``: the joined container reaches and resolves both networks'
        members, they resolve its name and aliases on the second one, and faults apply
        there; joining twice, or a bad alias list, is a clear error."""
        from pytest_pycontain.errors import ConfigError, NetworkError

        front, back = engine.network(), engine.network()
        made: list[Container] = []
        try:
            made.append(web := run(network=front, name="web", command="sleep 1000"))
            made.append(store := run(network=back, name="store", command="sleep 1000"))
            made.append(both := run(network=front, name="both", command="sleep 1000"))
            once = "ping -c 1 -W 3 {}"  # what must not get through
            assert both.exec(once.format("store")).exit_code != 0
            back.connect(both, aliases=["gateway-svc"])
            for name in ("store", "web"):
                assert both.exec(REACH.format(name)).exit_code == 0, name
            for name in ("both", "gateway-svc"):
                assert store.exec(REACH.format(name)).exit_code == 0, name
            assert web.exec(once.format("store")).exit_code != 0  # web is not on back
            back.partition(both, store)
            assert both.exec(once.format("store")).exit_code != 0
            back.heal()
            assert both.exec(REACH.format("store")).exit_code == 0
            with pytest.raises(NetworkError):
                back.connect(both)
            with pytest.raises(ConfigError, match=r"connect\(aliases='x'\): expected a list"):
                front.connect(store, aliases="x")
        finally:
            for container in made:
                container.remove()
            front.remove()
            back.remove()

    def test_internal_networks_are_said_and_checked(self, engine, run) -> None:
        """``internal`` is a flag (a bad one is a clear error); members of an internal network
        still reach each other. (That nothing gets out, and that other networks do reach
        out, is proved on both backends where the test owns the outside world:
        tests/test_egress.py.)"""
        from pytest_pycontain.errors import ConfigError

        with pytest.raises(ConfigError, match=r"network\(internal='yes'\): expected True"):
            engine.network(internal="yes")
        inside = engine.network(internal=True)
        made: list[Container] = []
        try:
            assert inside.internal is True
            made.append(shut := run(network=inside, name="shut", command="sleep 1000"))
            made.append(peer := run(network=inside, name="peer", command="sleep 1000"))
            assert peer.exec(REACH.format(shut.ip)).exit_code == 0
        finally:
            for container in made:
                container.remove()
            inside.remove()


    def test_expose_host_port_reaches_the_test_process(self, engine, run) -> None:
        """A server on the test process's own loopback, reached from a container as
        host.pycontain.internal (on a network, and on the default one a container with ports
        gets); an exposed port nothing listens on is a connection refused
        (as Docker's host-gateway gives), then reached once a server listens there, refused
        again once it has gone; a port never exposed is not reached; a bad port is a clear
        error."""
        import http.server
        import socket
        import threading

        from pytest_pycontain.errors import ConfigError

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"hello from the test process\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        hidden = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        for each in (server, hidden):
            threading.Thread(target=each.serve_forever, daemon=True).start()
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            silent = probe.getsockname()[1]
        net = engine.network()
        made: list[Container] = []
        try:
            port = server.server_address[1]
            assert engine.expose_host_port(port) == "host.pycontain.internal"
            engine.expose_host_port(silent)
            for bad in (0, 70000, "80", True):
                with pytest.raises(ConfigError, match=r"expose_host_port\(port="):
                    engine.expose_host_port(bad)
            made.append(box := run(network=net, command="sleep 1000"))
            fetch = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc "
                     "host.pycontain.internal {} > /tmp/r 2>&1; echo code=$?; cat /tmp/r")
            got = box.exec(fetch.format(port), timeout=30).output
            assert got.endswith("hello from the test process\n"), got
            # on the default network (ports, no network) too, where no DNS names anyone
            made.append(loose := run(ports=[8080], command="sleep 1000"))
            got = loose.exec(fetch.format(port), timeout=30).output
            assert got.endswith("hello from the test process\n"), got
            refused = box.exec(fetch.format(silent), timeout=30).output
            assert refused.startswith("code=1") and "Connection refused" in refused, refused
            never = box.exec(fetch.format(hidden.server_address[1]), timeout=30).output
            assert "hello" not in never, never
            # a server that comes later is reached; once it has gone, refused again
            late = http.server.ThreadingHTTPServer(("127.0.0.1", silent), Hello)
            threading.Thread(target=late.serve_forever, daemon=True).start()
            try:
                _until(lambda: box.exec(fetch.format(silent), timeout=30).output.endswith(
                    "hello from the test process\n"))
            finally:
                late.shutdown()
                late.server_close()
            _until(lambda: "Connection refused" in box.exec(fetch.format(silent),
                                                            timeout=30).output)
        finally:
            for container in made:
                container.remove()
            net.remove()
            for each in (server, hidden):
                each.shutdown()
                each.server_close()


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _http_get(address: tuple[str, int], path: str, timeout: float = 10.0) -> str:
    """The body of ``GET path`` from the test process itself (not from a container)."""
    import socket

    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for separator in (b"\r\n\r\n", b"\n\n"):  # a CGI's own header ends with bare newlines
        _, sep, body = data.partition(separator)
        if sep:
            break
    if not sep:
        raise ConnectionError(f"no HTTP answer from {address}: {data!r}")
    return body.decode()


def path_search_tree(tmp_path: Path) -> Path:
    """Directories for a PATH search of ``tool``: ``a/tool`` a directory, ``b/tool`` a file
    without execute permission, ``c/tool`` only its owner (root) may run, ``d/tool`` anyone;
    each says which it is and its arguments."""
    bins = tmp_path / "bins"
    (bins / "a" / "tool").mkdir(parents=True)
    for name, mode, text in (("b", 0o644, "not me"), ("c", 0o700, "owner"), ("d", 0o755, "any")):
        (bins / name).mkdir(exist_ok=True)
        tool = bins / name / "tool"
        tool.write_text(f'#!/bin/sh\necho {text} "$@"\n')
        tool.chmod(mode)
    return bins


def _wait_for_log(container: Container, text: str) -> None:
    _until(lambda: text in container.logs())


def busybox_rootfs(path: Path) -> Path:
    """A rootfs shaped like upstream's busybox image, from Debian's busybox-static."""
    import shutil
    import subprocess

    (path / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", path / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", path / "bin" / applet)
    for name in ("etc", "root", "home", "var/www", "usr", "proc", "sys", "dev"):
        (path / name).mkdir(parents=True, exist_ok=True)
    (path / "tmp").mkdir(mode=0o1777)
    os.chmod(path / "tmp", 0o1777)
    (path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "www-data:x:33:33:www-data:/var/www:/bin/false\n"
        "nobody:x:65534:65534:nobody:/home:/bin/false\n")
    (path / "etc" / "group").write_text(
        "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nnogroup:x:65534:\n")
    return path


def _ping_ms(output: str) -> float:
    """The round trip of busybox ping's one packet, in ms."""
    for line in output.splitlines():
        if "time=" in line:
            return float(line.split("time=")[1].split()[0])
    raise AssertionError(f"no round trip in {output!r}")
