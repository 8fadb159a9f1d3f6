"""Many containers alive at once (issue 4): the time to start them all and the memory the
engine's own helper processes add per container; and many containers on one network all
reaching each other by name (issue 6)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .env import IMAGE, Env, skipped
from .lifecycle import SLEEP


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def helper_pids(root: int) -> list[int]:
    """``root`` and its descendants in its pid namespace: the engine's helpers (the zygote and
    the shims it forks), not the containers' own processes (they are in their own)."""
    own_ns = os.readlink(f"/proc/{root}/ns/pid")
    tree = _children()
    found, todo = [root], list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/pid") == own_ns:
                found.append(pid)
                todo.extend(tree.get(pid, []))
    return found


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def _remove_all(boxes: list, net: object) -> None:
    """Kill and remove every container, then the network; best effort."""
    for box in boxes:
        with contextlib.suppress(Exception):
            box.kill()
            box.remove()
    net.remove()


def alive(env: Env, count: int) -> dict | None:
    """``count`` native containers alive at once; PSS of the helpers before and with them."""
    try:
        from pytest_pycontain.engine import RunSpec

        engine = env.native
        net = engine.network()
        warm = engine.run(RunSpec(image=IMAGE, command=SLEEP, network=net))
        warm.kill()
        warm.remove()  # the zygote (the shims' parent) is up, and warm shims are ready
        zygote = engine.zygote.pid
        time.sleep(0.5)
        before_pids = helper_pids(zygote)
        before = pss_kib(before_pids)
        boxes = []
        start = time.perf_counter()
        try:
            for _ in range(count):
                boxes.append(engine.run(RunSpec(image=IMAGE, command=SLEEP, network=net)))
            elapsed = time.perf_counter() - start
            time.sleep(0.5)
            with_pids = helper_pids(zygote)
            with_them = pss_kib(with_pids)
            running = sum(1 for box in boxes if box.status == "running")
        finally:
            _remove_all(boxes, net)
        return {"containers": count, "running": running, "network": "one shared",
                "start_all_s": round(elapsed, 2),
                "per_container_start_ms": round(elapsed * 1000 / count, 1),
                "helper_processes_before": len(before_pids),
                "helper_processes_with": len(with_pids),
                "helper_pss_before_kib": before, "helper_pss_with_kib": with_them,
                "pss_per_container_kib": round((with_them - before) / count, 1),
                "how": "PSS from /proc/PID/smaps_rollup of the zygote and its descendants in "
                       "the host pid namespace (shims, warm shims); containers' own processes "
                       "excluded; DNS and proxies are threads of the test process"}
    except Exception as exc:
        skipped(f"fleet: failed: {type(exc).__name__}: {exc}")
        return None


def mesh(env: Env, count: int) -> dict | None:
    """``count`` native containers on one network; each pings every other by name."""
    try:
        from pytest_pycontain.engine import RunSpec

        engine = env.native
        net = engine.network()
        names = [f"peer{i}" for i in range(count)]
        boxes = []
        try:
            start = time.perf_counter()
            for name in names:
                boxes.append(engine.run(RunSpec(image=IMAGE, name=name, command=SLEEP,
                                                network=net)))
            started = time.perf_counter() - start
            # on a failed ping, say whether the name resolved (a DNS or a packet problem)
            script = "; ".join(
                f"if ping -c1 -W2 {n} >/dev/null 2>&1; then echo ok; "
                f"elif nslookup {n} >/dev/null 2>&1; then echo FAIL {n} ping; "
                f"else echo FAIL {n} dns; fi" for n in names)
            ok = failed = 0
            failures: list[str] = []
            kinds: dict[str, int] = {}
            start = time.perf_counter()
            for name, box in zip(names, boxes, strict=True):
                out = box.exec(["sh", "-c", script]).stdout.split("\n")
                for line in out:
                    if line == "ok":
                        ok += 1
                    elif line.startswith("FAIL"):
                        failed += 1
                        if len(failures) < 100:
                            failures.append(f"{name} -> {line.split()[1]} "
                                            f"({line.split()[2]})")
                        kinds[line.split()[2]] = kinds.get(line.split()[2], 0) + 1
            checked = time.perf_counter() - start
        finally:
            _remove_all(boxes, net)
        return {"containers": count, "pairs_checked": ok + failed, "pairs_ok": ok,
                "failures": failures, "failed_by": kinds, "start_s": round(started, 2),
                "check_s": round(checked, 2), "how": "busybox ping -c1 NAME, every ordered "
                "pair including itself, through the network's DNS"}
    except Exception as exc:
        skipped(f"mesh: failed: {type(exc).__name__}: {exc}")
        return None
