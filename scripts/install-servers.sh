#!/usr/bin/env bash
# Installs the database servers the integration tests start as local processes. Idempotent: what
# is already installed is left alone, so a second run costs a few milliseconds.
#
#   redis-server   Debian package redis-server
#   dynalite       npm package dynalite (a DynamoDB emulator), with Node.js from Debian if missing
#   consul         Debian package consul (1.8.7), from the bullseye suite: bookworm has none
#   Python SDK     PyPI launchdarkly-server-sdk with redis, boto3 and python-consul, in a
#                  virtualenv at $FLAGSTORE_VENV (default ~/.cache/flagstore/venv), for the
#                  cross-SDK tests
#
# Runs as root (CI and the dev machines are root); elsewhere it uses sudo if present.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
    echo "install-servers: installing redis-server"
    apt_install redis-server
fi
# The Debian package starts a system-wide redis on port 6379; the tests never use it (they start
# their own on free ports), so it is left as the package configured it.

if ! command -v dynalite >/dev/null 2>&1; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-servers: installing nodejs and npm"
        apt_install nodejs npm
    fi
    echo "install-servers: installing dynalite"
    # dynalite keeps tables in memory by default; its LevelDB backend ships prebuilt binaries.
    $SUDO npm install -g --no-fund --no-audit dynalite@4 >/dev/null
fi

if ! command -v consul >/dev/null 2>&1; then
    # Bookworm has no consul package; bullseye's is added from the mirror this machine already
    # uses. Nothing else is taken from bullseye: every other package has a newer bookworm version.
    mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    if [ -z "$mirror" ]; then
        mirror="$(sed -n 's/^deb \(http[^ ]*debian\)\/* .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)"
    fi
    if [ -z "$mirror" ]; then
        echo "install-servers: cannot find the Debian mirror this machine uses (no http(s) .../debian URI in" >&2
        echo "  /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list); install consul 1.8.7 by hand" >&2
        exit 1
    fi
    list=/etc/apt/sources.list.d/flagstore-bullseye.list
    if [ ! -f "$list" ]; then
        echo "install-servers: adding the bullseye suite of $mirror for consul"
        echo "deb $mirror bullseye main" | $SUDO tee "$list" >/dev/null
        apt_updated=""
    fi
    echo "install-servers: installing consul"
    apt_install consul
fi

venv="${FLAGSTORE_VENV:-$HOME/.cache/flagstore/venv}"
if ! "$venv/bin/python" -c "import ldclient, redis, boto3, consul" >/dev/null 2>&1; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    echo "install-servers: installing the LaunchDarkly Python SDK into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "launchdarkly-server-sdk>=9,<10" "redis>=5" "boto3>=1.28" "python-consul==1.1.0"
fi
echo "install-servers: python $("$venv/bin/python" -c 'import ldclient.version as v; print("launchdarkly-server-sdk", v.VERSION)')"
echo "install-servers: consul $(consul version 2>/dev/null | head -1 | sed 's/^Consul //')"
echo "install-servers: dynalite $(npm ls -g dynalite 2>/dev/null | sed -n 's/.*dynalite@//p' | head -1)"
echo "install-servers: redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')"
