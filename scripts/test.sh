#!/usr/bin/env bash
# The one command that runs every test of the workspace on a fresh machine: it installs the
# database servers the tests need, then runs `cargo test` over the whole workspace (unit tests,
# the conformance suite against every store, integration tests against real servers, doctests).
#
# Servers come from, in this order: an endpoint in the environment (FLAGSTORE_TEST_REDIS_URL, ...),
# a local binary started on a free 127.0.0.1 port, Docker via testcontainers. Nothing is skipped:
# a missing server fails the run with a message naming what to install.
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -p flagstore-redis`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-servers.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole workspace, summed over every test binary and the doctests.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
