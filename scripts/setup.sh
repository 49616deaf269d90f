#!/usr/bin/env bash
# Idempotent setup: system packages and the project venv (which holds the sandbox's MongoDB server).
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
# promtool checks and unit-tests the alert rules (deploy/prometheus) in `make test`; Debian ships
# it in the prometheus package. The server that comes with it is never used: stop it, keep it off.
if ! command -v promtool >/dev/null 2>&1; then
  say "installing Debian package: prometheus (for promtool)"
  [ ${#need[@]} -gt 0 ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  $SUDO service prometheus stop >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable prometheus >/dev/null 2>&1 || true
  fi
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

# 3. The MongoDB-compatible server: a given URL, a local mongod or Docker need nothing more;
#    otherwise the sandbox runs SecantusDB (`secantusd-py`, installed into .venv with the dev extra).
if [ -z "${MIGRATOR_TEST_MONGO_URL:-}" ] && ! command -v mongod >/dev/null 2>&1; then
  if [ ! -x .venv/bin/secantusd-py ]; then
    say "SecantusDB (secantusd-py) is missing from .venv; reinstalling the dev extra"
    .venv/bin/pip install -q -e '.[dev]'
  fi
fi
say "ready: .venv/bin/migrator"
