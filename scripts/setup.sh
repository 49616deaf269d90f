#!/usr/bin/env bash
# Idempotent setup: system packages, the project venv, and the MongoDB-compatible server's venv.
# Safe to run again; each step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# 1. System packages: MariaDB server (throwaway source) and the headers mysqlclient builds against.
need=()
if [ -z "${MIGRATOR_TEST_MYSQL_URL:-}" ] && ! command -v mariadbd >/dev/null 2>&1 \
   && [ ! -x /usr/sbin/mariadbd ] && ! command -v mysqld >/dev/null 2>&1 && [ ! -x /usr/sbin/mysqld ]; then
  need+=(mariadb-server mariadb-client)
fi
if ! command -v pkg-config >/dev/null 2>&1; then need+=(pkg-config); fi
# Java runs the real Debezium engine in the end-to-end CDC test.
if ! command -v java >/dev/null 2>&1; then need+=(openjdk-17-jre-headless); fi
if ! pkg-config --exists mariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
  need+=(libmariadb-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts a system mariadb on install in some setups; the project never uses it.
  $SUDO service mariadb stop >/dev/null 2>&1 || true
fi

# 2. The project venv (Python >= 3.11).
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing migrator and its dependencies into .venv"
  .venv/bin/pip install -q -U pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# 3. The MongoDB-compatible server. A given URL or a local mongod needs nothing more; otherwise
#    mongoeco, which needs Python >= 3.13, gets a venv of its own.
if [ -z "${MIGRATOR_TEST_MONGO_URL:-}" ] && ! command -v mongod >/dev/null 2>&1; then
  if [ ! -x .venv-mongoeco/bin/python ] || ! .venv-mongoeco/bin/python -c 'import mongoeco, bson' 2>/dev/null; then
    PY313=""
    # pyenv shims exist on PATH even when they cannot run: try each candidate for real.
    for c in ${MIGRATOR_PYTHON313:-} /root/.pyenv/versions/3.1[3-9]*/bin/python3 \
             /usr/local/bin/python3.13 /usr/bin/python3.13 python3.14 python3.13; do
      if "$c" -c 'import sys; assert sys.version_info >= (3, 13)' >/dev/null 2>&1; then
        PY313="$c"; break
      fi
    done
    if [ -z "$PY313" ]; then
      say "no Python >= 3.13 found: installing one with apt is not possible on Debian 12;"
      say "set MIGRATOR_TEST_MONGO_URL to a MongoDB server, or put mongod or python3.13 on PATH"
      exit 2
    fi
    say "creating .venv-mongoeco with $PY313 for the mongoeco wire server"
    "$PY313" -m venv .venv-mongoeco
    .venv-mongoeco/bin/pip install -q -U pip >/dev/null
    .venv-mongoeco/bin/pip install -q 'mongoeco[wire]>=4.11,<5'
  fi
fi
say "ready: .venv/bin/migrator"
