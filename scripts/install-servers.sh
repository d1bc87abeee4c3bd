#!/usr/bin/env bash
# Installs the database servers the integration tests start as local processes. Idempotent: what
# is already installed is left alone, so a second run costs a few milliseconds. It says what it
# will change on this machine before changing anything.
#
#   redis-server     Debian package redis-server
#   redis-sentinel   Debian package redis-sentinel (Redis Sentinel)
#   dynalite         npm package dynalite (a DynamoDB emulator), with Node.js from Debian if missing
#   consul           Debian package consul (1.8.7), from the bullseye suite: bookworm has none. The
#                    suite is added from the Debian mirror this machine already uses; with no
#                    mirror configured the script stops and says so.
#   Python SDK       PyPI launchdarkly-server-sdk with redis, boto3 and python-consul, in a
#                    virtualenv at $FLAGSTORE_VENV (default ~/.cache/flagstore/venv), for the
#                    cross-SDK tests
#   moto_server      PyPI moto[server] in the same virtualenv: a DynamoDB emulator that also
#                    serves DynamoDB Streams (dynalite has no Streams API), for the change feed
#
# Runs as root (CI and the dev machines are root); elsewhere it uses sudo if present.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
venv="${FLAGSTORE_VENV:-$HOME/.cache/flagstore/venv}"
bullseye_list=/etc/apt/sources.list.d/flagstore-bullseye.list

# The Debian mirror already configured here, for the bullseye suite consul comes from.
configured_mirror() {
    local mirror
    mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    if [ -z "$mirror" ]; then
        mirror="$(sed -n 's/^deb \(http[^ ]*debian\)\/* .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)"
    fi
    printf '%s' "$mirror"
}

# --- The plan: what is missing, and what installing it changes.
apt_packages=()
command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || apt_packages+=(redis-sentinel)
need_dynalite=""
if ! command -v dynalite >/dev/null 2>&1; then
    need_dynalite=1
    command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)
fi
need_bullseye=""
if ! command -v consul >/dev/null 2>&1; then
    apt_packages+=(consul)
    if [ ! -f "$bullseye_list" ]; then
        mirror="$(configured_mirror)"
        if [ -z "$mirror" ]; then
            echo "install-servers: consul is missing, and bookworm has no consul package; the bullseye suite" >&2
            echo "  would come from this machine's Debian mirror, but none is configured (no http(s) .../debian URI" >&2
            echo "  in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list). Install consul 1.8.7 by hand." >&2
            exit 1
        fi
        need_bullseye="$mirror"
    fi
fi
need_venv=""
if ! "$venv/bin/python" -c "import ldclient, redis, boto3, consul, moto" >/dev/null 2>&1 \
    || [ ! -x "$venv/bin/moto_server" ]; then
    need_venv=1
    python3 -m venv --help >/dev/null 2>&1 || apt_packages+=(python3-venv)
fi

if [ ${#apt_packages[@]} -gt 0 ] || [ -n "$need_dynalite" ] || [ -n "$need_venv" ]; then
    echo "install-servers: this machine lacks what the tests need; the changes:"
    if [ -n "$need_bullseye" ]; then
        echo "  - add $bullseye_list: the bullseye suite of $need_bullseye (for consul only)"
    fi
    if [ ${#apt_packages[@]} -gt 0 ]; then
        echo "  - apt-get install ${apt_packages[*]}"
    fi
    [ -z "$need_dynalite" ] || echo "  - npm install -g dynalite@4"
    [ -z "$need_venv" ] || echo "  - a Python virtualenv at $venv with launchdarkly-server-sdk, redis, boto3, python-consul, moto[server]"
fi

# --- The changes.
if [ -n "$need_bullseye" ]; then
    # Nothing else is taken from bullseye: every other package has a newer bookworm version.
    echo "deb $need_bullseye bullseye main" | $SUDO tee "$bullseye_list" >/dev/null
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    # The Debian packages start system-wide servers (redis on 6379, sentinel on 26379); the tests
    # never use them (they start their own on free ports), so they are left as configured.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
if [ -n "$need_dynalite" ]; then
    # dynalite keeps tables in memory by default; its LevelDB backend ships prebuilt binaries.
    $SUDO npm install -g --no-fund --no-audit dynalite@4 >/dev/null
fi
if [ -n "$need_venv" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "launchdarkly-server-sdk>=9,<10" "redis>=5" "boto3>=1.28" "python-consul==1.1.0" "moto[server]>=5,<6"
fi

echo "install-servers: python $("$venv/bin/python" -c 'import ldclient.version as v; print("launchdarkly-server-sdk", v.VERSION)')"
echo "install-servers: moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)')"
echo "install-servers: consul $(consul version 2>/dev/null | head -1 | sed 's/^Consul //')"
echo "install-servers: dynalite $(npm ls -g dynalite 2>/dev/null | sed -n 's/.*dynalite@//p' | head -1)"
echo "install-servers: redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'), redis-sentinel $(command -v redis-sentinel >/dev/null && echo present)"
