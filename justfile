# elephant-tunnel: the commands users and CI run. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the available commands.
default:
    @just --list

# Install or check what the build and tests need (cmake, clang, Postgres binaries, pgbouncer).
prereqs:
    bash scripts/prereqs.sh

# Build the local Postgres image for the container arm (no registry needed); `--force` rebuilds.
images *ARGS:
    bash scripts/build-postgres-image.sh {{ARGS}}

# The main job: the deterministic simulator — the real proxy under a thousand hostile networks.
sim *ARGS:
    cargo run --release -p sim -- run {{ARGS}}

# Replay one simulator seed with its full trace.
sim-replay SEED *ARGS:
    cargo run --release -p sim -- replay {{SEED}} {{ARGS}}

# Run every test: unit, property (bounded cases), real-Postgres integration.
test: prereqs
    cargo test --workspace --doc --quiet
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi
    cargo test -p sim --features buggify --test bites

# Run the conformance suite: the transcript corpus against Postgres, the proxy (TCP, TLS, tunnel) and the fake.
conformance: prereqs
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run -p conformance --no-fail-fast; \
    else \
        cargo test -p conformance --no-fail-fast; \
    fi

# Run the codec's property tests with many more cases (default 100000 each).
proptest-long CASES="100000":
    PROPTEST_CASES={{CASES}} cargo test --release -p elephant-protocol --lib properties

# Recapture the codec's byte vectors from a real Postgres (writes testdata/vectors/).
capture-vectors: prereqs
    cargo run -p elephant-protocol --example capture_vectors -- testdata/vectors

# Benchmarks (pgbench TPS direct / PgBouncer / proxy, time to first row); `just bench --quick` for a smoke run.
bench *ARGS: prereqs
    cargo run --release -p reference-proxy --example bench -- {{ARGS}}

# Run the proxy: `just proxy --origin postgres://user:pass@host:5432/db` (see --help).
proxy *ARGS:
    cargo run --release -p reference-proxy -- {{ARGS}}

# Real Postgres + tunnel edge + proxy in tunnel mode on loopback; prints a psql string; Ctrl-C stops.
demo: prereqs
    cargo run -p reference-proxy --example demo

# Run the tunnel edge: `just edge --origin tcp://127.0.0.1:5432 --cert c.pem --key k.pem --service-token ID:SECRET`.
edge *ARGS:
    cargo run --release -p tunnel-edge -- {{ARGS}}

# Review changed insta snapshots.
review:
    cargo insta review

# Format and lint as CI does.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
