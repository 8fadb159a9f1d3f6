"""What makes the service images behave as the official ``postgres`` and ``redis`` images.

Their documented contract, in our own words: the entrypoints run as root, prepare the data
directory and drop to the service's own user; PostgreSQL's first start runs ``initdb`` with
``POSTGRES_USER``/``POSTGRES_PASSWORD``, creates ``POSTGRES_DB``, runs
``/docker-entrypoint-initdb.d``, and then listens on every interface with password
authentication for anything not on its unix socket. The image configs carry the same
``VOLUME``, ``EXPOSE``, ``STOPSIGNAL`` and working directory as the official images, plus a
``pg_isready`` healthcheck (the pattern users add in compose files).
"""

from __future__ import annotations

from dataclasses import dataclass

POSTGRES_ENTRYPOINT = r"""#!/bin/bash
# PostgreSQL entrypoint of the pycontain test environment (the official image's contract).
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = '0' ]; then
    # Root only prepares what the server's user cannot, then starts this script again as it.
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03775 /var/run/postgresql
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}"
    : "${POSTGRES_DB:=$POSTGRES_USER}"
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
        echo 'Error: the database is uninitialized and no superuser password is set.' >&2
        echo '       Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust to allow' >&2
        echo '       every connection without one).' >&2
        exit 1
    fi
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" ${POSTGRES_INITDB_ARGS:-}
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

    # A server on the unix socket only, for the set-up; the network sees none of it.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        echo 'CREATE DATABASE :"db" ;' | "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.sql) echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *) [ -e "$f" ] && echo "$0: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
fi

exec "$@"
"""

REDIS_ENTRYPOINT = r"""#!/bin/sh
# Redis entrypoint of the pycontain test environment (the official image's contract).
set -e

case "$1" in
    -*|*.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    # The data in the working directory (the VOLUME) belongs to redis, as the server runs as it.
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = 'redis-server' ]; then
    # The official image's server has protected mode off (reachable on its network without a
    # password); Debian's default has it on, so say so unless the arguments do.
    case " $* " in
        *protected-mode*) ;;
        *) set -- "$@" --protected-mode no ;;
    esac
fi

exec "$@"
"""


@dataclass(frozen=True)
class ServiceImage:
    """One service image: its tag, the files of its config layer and its image config."""

    tag: str
    files: tuple[tuple[str, int, str | None], ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    port: str
    volume: str
    workdir: str
    stop_signal: str | None = None
    healthcheck: tuple[str, ...] | None = None
    path_extra: str = ""

    def config(self, path: str) -> dict:
        """The image config (Docker's field names) with ``path`` as the first variable."""
        config: dict = {
            "Env": [path + (f":{self.path_extra}" if self.path_extra else ""), *self.env],
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "ExposedPorts": {self.port: {}},
            "Volumes": {self.volume: {}},
            "WorkingDir": self.workdir,
        }
        if self.stop_signal:
            config["StopSignal"] = self.stop_signal
        if self.healthcheck:
            second = 1_000_000_000
            config["Healthcheck"] = {
                "Test": list(self.healthcheck),
                "Interval": 1 * second,
                "Timeout": 5 * second,
                "StartPeriod": 0,
                "Retries": 30,
            }
        return config


IMAGES = {
    "postgres": ServiceImage(
        tag="15",
        files=(
            ("usr/local/bin/docker-entrypoint.sh", 0o755, POSTGRES_ENTRYPOINT),
            ("docker-entrypoint-initdb.d", 0o755, None),
        ),
        entrypoint=("docker-entrypoint.sh",),
        cmd=("postgres",),
        env=("PGDATA=/var/lib/postgresql/data", "PG_MAJOR=15", "LANG=C.UTF-8"),
        port="5432/tcp",
        volume="/var/lib/postgresql/data",
        workdir="/",
        stop_signal="SIGINT",
        path_extra="/usr/lib/postgresql/15/bin",
        # Over TCP, so the set-up server (unix socket only) never counts as ready.
        healthcheck=(
            "CMD-SHELL",
            'pg_isready -h 127.0.0.1 -p 5432 -U "${POSTGRES_USER:-postgres}"',
        ),
    ),
    "redis": ServiceImage(
        tag="7",
        files=(
            ("usr/local/bin/docker-entrypoint.sh", 0o755, REDIS_ENTRYPOINT),
            ("data", 0o755, None),
        ),
        entrypoint=("docker-entrypoint.sh",),
        cmd=("redis-server",),
        env=(),
        port="6379/tcp",
        volume="/data",
        workdir="/data",
    ),
}
