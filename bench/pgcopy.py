"""A fresh, seeded PostgreSQL per test, three ways, side by side (issue 18): per test, a
server made ready, a query on the seeded table from this process (through the published port)
and the copy gone again.

- ``initdb``: a new ``postgres:15`` container per test (its entrypoint runs ``initdb``), then
  the seed, then the query.
- ``commit``: once, a container seeded and stopped, then ``commit()``; per test, a container
  of that image (its data directory is in the image: no initdb, no seed), then the query.
- ``template``: once, one server with the seeded database; per test ``CREATE DATABASE ...
  TEMPLATE seeded``, the query in it, ``DROP DATABASE`` (PostgreSQL's own copy).

Natively and on the Docker backend, through the engine protocol. Every way waits for the
server the same way (something listens on 5432 inside -- the set-up server of the
entrypoint listens on its socket only -- and then a connection from here succeeds). The data
directory is off the image's VOLUME (``PGDATA=/pgdata``), as the README's recipe has it, since
a commit leaves volumes out.
"""

from __future__ import annotations

import time
from typing import Any

from .env import Env, skipped
from .lifecycle import drain
from .stats import summarize

IMAGE = "postgres:15"
PASSWORD = "bench-pw"
ENV = {"POSTGRES_PASSWORD": PASSWORD, "PGDATA": "/pgdata"}
ROWS = 50_000
SEED = (f"CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name "
        f"FROM generate_series(1, {ROWS}) g; CREATE INDEX ON items (name);")
WAYS = ("initdb", "commit", "template")
PEERS = ("native", "docker_backend")


def _connect(container: Any, dbname: str = "postgres") -> Any:
    import psycopg

    host, port = container.address(5432)
    return psycopg.connect(host=host, port=port, user="postgres", password=PASSWORD,
                           dbname=dbname, autocommit=True, connect_timeout=30)


def _count(container: Any, dbname: str = "postgres") -> None:
    with _connect(container, dbname) as conn:
        found = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    if found != ROWS:
        raise RuntimeError(f"the copy has {found} rows, not {ROWS}")


def _accepting(container: Any, timeout: float = 120) -> None:
    """Until the server takes a connection (it listens while it still starts up)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            _connect(container).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Ways:
    """The three ways on one engine; ``setup`` makes what the ways share, ``close`` ends it."""

    def __init__(self, engine: Any):
        from pytest_pycontain import wait
        from pytest_pycontain.runspec import RunSpec

        self.engine, self.RunSpec, self.ready = engine, RunSpec, wait.port(5432, timeout=180)
        self.seeded_image: Any = None
        self.server: Any = None
        self.made = 0
        self.setup_ms: dict[str, float] = {}

    def _server(self, image: Any) -> Any:
        from pytest_pycontain.wait import until_ready

        container = self.engine.run(self.RunSpec.create(image, env=ENV, ports=[5432]))
        try:
            until_ready(container, self.ready)
            _accepting(container)
            return container
        except BaseException:
            container.remove()
            raise

    def setup(self) -> None:
        start = time.perf_counter()
        seeding = self._server(IMAGE)
        try:
            with _connect(seeding) as conn:
                conn.execute(SEED)
            seeding.stop()
            self.seeded_image = seeding.commit()
        finally:
            seeding.remove()
        self.setup_ms["commit"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        self.server = self._server(IMAGE)
        with _connect(self.server) as conn:
            conn.execute("CREATE DATABASE seeded")
        with _connect(self.server, "seeded") as conn:
            conn.execute(SEED)
        self.setup_ms["template"] = (time.perf_counter() - start) * 1000

    def initdb(self) -> None:
        container = self._server(IMAGE)
        try:
            with _connect(container) as conn:
                conn.execute(SEED)
            _count(container)
        finally:
            container.remove()

    def commit(self) -> None:
        container = self._server(self.seeded_image)
        try:
            _count(container)
        finally:
            container.remove()

    def template(self) -> None:
        self.made += 1
        name = f"t{self.made}"
        with _connect(self.server) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE seeded")
            try:
                _count(self.server, name)
            finally:
                conn.execute(f"DROP DATABASE {name}")

    def close(self) -> None:
        if self.server is not None:
            self.server.remove()
            self.server = None
        drain(self.engine)


def measure(env: Env, samples: int, peers: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """``samples`` fresh copies per way and peer (after one warm-up copy each)."""
    from testenv.images import seed_services

    seed_services(env.registry.host)
    results: dict[str, Any] = dict.fromkeys(PEERS)
    for peer in peers:
        engine = env.native if peer == "native" else env.docker_backend
        if engine is None:
            skipped(f"pgcopy {peer}: no engine")
            continue
        ways = Ways(engine)
        row: dict[str, Any] = {"rows": ROWS}
        try:
            engine.pull(IMAGE)
            ways.initdb()  # the image unpacked and the engine warm before the set-up's clock
            ways.setup()
            for way in WAYS:
                step = getattr(ways, way)
                step()  # a warm-up
                times = []
                for _ in range(samples):
                    start = time.perf_counter()
                    step()
                    drain(engine)  # the copy's teardown counts
                    times.append((time.perf_counter() - start) * 1000)
                row[way] = summarize(times, None)
            row["setup_ms"] = {k: round(v, 1) for k, v in ways.setup_ms.items()}
            row["x_initdb_over_commit"] = round(row["initdb"]["median_ms"]
                                                / row["commit"]["median_ms"], 1)
        except Exception as exc:
            skipped(f"pgcopy {peer}: failed: {type(exc).__name__}: {exc}")
            row = {}
        finally:
            try:
                ways.close()
            except Exception as exc:
                skipped(f"pgcopy {peer}: could not remove the server: {exc}")
            _forget_image(engine, ways.seeded_image)
        results[peer] = row or None
    return results


def _forget_image(engine: Any, image: Any) -> None:
    """The committed image of the Docker backend goes (the native one is in the bench's own
    store, which goes with its directory)."""
    api = getattr(engine, "api", None)
    if image is None or api is None:
        return
    try:
        api.remove_image(image.id, force=True)
    except Exception as exc:
        skipped(f"pgcopy: could not remove the committed image: {exc}")


def table(results: dict[str, Any] | None) -> list[str]:
    """The markdown lines of this section."""
    if not results or not any(results.values()):
        return []
    rows = next(row["rows"] for row in results.values() if row)
    lines = ["", f"| a fresh seeded PostgreSQL per test ({rows} rows), median ms (p90) | "
             "initdb + seed | commit copy | template database | x initdb / commit | "
             "set-up ms: commit, template |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for peer, row in results.items():
        if not row:
            lines.append(f"| {peer} | - | - | - | - | - |")
            continue
        cells = [f"{row[w]['median_ms']} ({row[w]['p90_ms']})" for w in WAYS]
        setup = row["setup_ms"]
        lines.append(f"| {peer} | {' | '.join(cells)} | {row['x_initdb_over_commit']} | "
                     f"{setup['commit']}, {setup['template']} |")
    return lines
