# Shared by scripts/*: small, idempotent set-up steps.

step() { printf '\n==> %s\n' "$*"; }

find_python() {
    local candidate
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return 0
        fi
    done
    echo "edgeops needs Python 3.11 or newer (apt-get install python3 python3-venv)" >&2
    return 1
}

ensure_venv() {
    local venv=$1 python
    if [ ! -x "$venv/bin/python" ]; then
        python=$(find_python)
        step "create $venv with $python"
        if ! "$python" -m venv "$venv" 2>/dev/null; then
            # Debian ships venv/ensurepip in a separate package.
            rm -rf "$venv"
            step "install python3-venv from apt"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv "$venv"
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    step "install mosquitto from apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
}

ensure_shellcheck() {
    # tests/unit/test_hardware_assets.py lints hardware/assets/install.sh with it
    if command -v shellcheck >/dev/null 2>&1; then
        return 0
    fi
    step "install shellcheck from apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
}

ensure_chromium() {
    # tests/integration/test_dashboard*.py render the fleet dashboard in headless Chromium
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    step "install chromium from apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
