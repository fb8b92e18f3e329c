#!/usr/bin/env bash
# Checks what the build and the tests need, and installs it when it can (root with apt).
# Otherwise it prints exactly what to install and fails.
#
#   cmake, clang, libclang-dev  build BoringSSL (boring-sys) for the proxy's TLS
#   PostgreSQL server binaries  the real Postgres that tests start (fixtures/)
#   pgbouncer                   the comparison arm of `just bench`
#   ca-certificates, pkg-config ordinary build needs
set -euo pipefail

missing_packages=()

need_command() { # command package
  command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2")
}

postgres_bin_dir() {
  if [ -n "${PG_BIN_DIR:-}" ] && [ -x "$PG_BIN_DIR/postgres" ]; then echo "$PG_BIN_DIR"; return; fi
  for version in 17 16 15; do
    if [ -x "/usr/lib/postgresql/$version/bin/postgres" ]; then
      echo "/usr/lib/postgresql/$version/bin"; return
    fi
  done
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; then
    pg_config --bindir; return
  fi
}

need_command cmake cmake
need_command clang clang
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 \
  || missing_packages+=(libclang-dev)
need_command pkg-config pkg-config
[ -n "$(postgres_bin_dir)" ] || missing_packages+=(postgresql postgresql-client)
need_command pgbouncer pgbouncer

if [ ${#missing_packages[@]} -eq 0 ]; then
  echo "prereqs: all present (Postgres binaries in $(postgres_bin_dir))"
  exit 0
fi

echo "prereqs: missing Debian packages: ${missing_packages[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
  echo "prereqs: installed ${missing_packages[*]}"
else
  echo "prereqs: install them with:  sudo apt-get install ${missing_packages[*]}" >&2
  echo "prereqs: (or, for Postgres, set PG_BIN_DIR to a directory holding initdb and postgres)" >&2
  exit 1
fi
