#!/usr/bin/env bash
# Builds a local Postgres image from Debian packages, with no container registry:
# mmdebstrap makes a minimal Debian root file system holding postgresql-15 from the machine's
# configured apt sources, streams it as a tarball into `docker import`, and
# docker/postgres/docker-entrypoint.sh makes it behave like the official `postgres` image
# (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_HOST_AUTH_METHOD, port 5432).
#
#   scripts/build-postgres-image.sh [--force]      (or: just images)
#
# Idempotent: does nothing when the image exists, unless --force.
#
# Environment:
#   ELEPHANT_POSTGRES_LOCAL_IMAGE  tag to build (default elephant-tunnel/postgres:15-debian);
#                                  fixtures looks for the same tag
#   ELEPHANT_IMAGE_SUITE           Debian suite (default bookworm, whose Postgres is 15)
#   ELEPHANT_IMAGE_PG_MAJOR        Postgres major version in that suite (default 15)
#   ELEPHANT_IMAGE_MIRROR          apt source for mmdebstrap: a mirror URL, a "deb ..." line or a
#                                  sources file (default: the machine's own Debian sources when
#                                  the machine runs that suite, else http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

image="${ELEPHANT_POSTGRES_LOCAL_IMAGE:-elephant-tunnel/postgres:15-debian}"
suite="${ELEPHANT_IMAGE_SUITE:-bookworm}"
pg_major="${ELEPHANT_IMAGE_PG_MAJOR:-15}"
entrypoint="docker/postgres/docker-entrypoint.sh"

force=false
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "images: unknown argument: $arg (only --force)" >&2
      exit 2
      ;;
  esac
done

if ! command -v docker >/dev/null 2>&1; then
  echo "images: the docker CLI is not installed; install Docker (Debian: apt-get install docker.io)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: the Docker daemon is not reachable (docker info failed); start it, or check DOCKER_HOST" >&2
  exit 1
fi

if docker image inspect "$image" >/dev/null 2>&1 && [ "$force" = false ]; then
  echo "images: $image already exists ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')); skipping (--force rebuilds)"
  exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "images: installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  else
    echo "images: mmdebstrap is missing; install it with:  sudo apt-get install mmdebstrap" >&2
    exit 1
  fi
fi

# The machine's own apt sources when they are for the same suite (same mirror, updates and
# security); otherwise the main archive under the suite's name.
mirror="${ELEPHANT_IMAGE_MIRROR:-}"
if [ -z "$mirror" ]; then
  # shellcheck source=/dev/null
  host_codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
  if [ "$host_codename" = "$suite" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=/etc/apt/sources.list.d/debian.sources
  elif [ "$host_codename" = "$suite" ] && [ -f /etc/apt/sources.list ] \
    && grep -q "^deb .* $suite " /etc/apt/sources.list; then
    mirror=/etc/apt/sources.list
  else
    mirror="http://deb.debian.org/debian"
  fi
fi

old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
echo "images: building $image from Debian $suite (postgresql-$pg_major), apt source: $mirror"
start=$(date +%s)

# Keep the image small: no docs (copyright files stay), man pages, translations, locale sources,
# apt lists or caches. Postgres's man pages are removed only after installation (the psql
# alternative needs them while it is configured). JIT is removed too: llvmjit.so, its bitcode
# and the LLVM and Z3 libraries it alone needs are about two thirds of the image; without them
# Postgres reports `SELECT pg_jit_available()` = false and plans as usual. The postgresql-common
# package must not create its default 'main' cluster: the entrypoint initialises its own data
# directory at start.
# shellcheck disable=SC2016  # the hooks' "$1" (the root directory) is expanded by mmdebstrap
mmdebstrap \
  --variant=minbase \
  --mode=root \
  --format=tar \
  --include="postgresql-$pg_major" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/elephant-no-main-cluster.conf"' \
  --customize-hook="copy-in $entrypoint /usr/local/bin" \
  --customize-hook='chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"' \
  --customize-hook='mkdir -p "$1/docker-entrypoint-initdb.d" "$1/var/lib/postgresql/data" "$1/var/run/postgresql"' \
  --customize-hook='chroot "$1" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql' \
  --customize-hook='chroot "$1" chmod 2775 /var/run/postgresql' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
  --customize-hook='rm -rf "$1"/usr/share/postgresql/*/man "$1"/usr/share/i18n/locales "$1"/usr/share/i18n/charmaps' \
  --customize-hook='rm -rf "$1"/usr/lib/postgresql/*/lib/llvmjit* "$1"/usr/lib/postgresql/*/lib/bitcode "$1"/usr/lib/*-linux-gnu/libLLVM-*.so* "$1"/usr/lib/*-linux-gnu/libz3.so*' \
  "$suite" - "$mirror" |
  # `docker import` takes only CMD/ENTRYPOINT/ENV/EXPOSE/ONBUILD/USER/VOLUME/WORKDIR changes on
  # older engines (20.10 here), so no STOPSIGNAL: `docker stop` sends SIGTERM, Postgres's smart
  # shutdown (the official image uses SIGINT, fast shutdown); test fixtures remove by force.
  docker import \
    --change "ENV PG_MAJOR=$pg_major" \
    --change "ENV PATH=/usr/lib/postgresql/$pg_major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'EXPOSE 5432' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["postgres"]' \
    --message "elephant-tunnel: postgresql-$pg_major from Debian $suite (scripts/build-postgres-image.sh)" \
    - "$image" >/dev/null

elapsed=$(($(date +%s) - start))
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
  # The image --force replaced; kept only while a container still uses it.
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
echo "images: built $image in ${elapsed}s ($size)"
