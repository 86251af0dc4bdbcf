#!/usr/bin/env bash
# Installs the edgeops agent as a systemd service on a Raspberry Pi (or any Debian-like board).
# Safe to run again: every step checks before it acts, so a second run upgrades in place.
#
#   sudo ./install.sh                          # edgeops[agent] from PyPI
#   sudo ./install.sh --source ./edgeops-0.2.0-py3-none-any.whl
#   sudo ./install.sh --config agent.toml      # also install the agent's configuration
#   ./install.sh --dry-run                     # print what would run, change nothing
#
# On 32-bit Raspberry Pi OS (armv7l) LiteRT has no wheels, so the agent runs on
# tflite-runtime 2.14, which needs numpy<2.
set -euo pipefail

PREFIX=${EDGEOPS_PREFIX:-/opt/edgeops}
VENV="$PREFIX/venv"
CONFIG_DIR=/etc/edgeops
UNIT_DIR=${EDGEOPS_UNIT_DIR:-/etc/systemd/system}
UNIT_NAME=edgeops-agent.service
SERVICE_USER=edgeops
SOURCE=edgeops
CONFIG=""
DRY_RUN=0
START=1
MACHINE=${EDGEOPS_MACHINE:-$(uname -m)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --source) SOURCE=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-start) START=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

say() { printf '==> %s\n' "$*"; }

if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 $*)" >&2
    exit 1
fi

case "$MACHINE" in
armv7l | armv6l | armv8l)
    # No ai-edge-litert wheels for 32-bit Arm: tflite-runtime 2.14 and the numpy it was built for.
    RUNTIME_PACKAGES=("numpy<2" "tflite-runtime==2.14.*")
    ;;
aarch64 | arm64 | x86_64 | amd64)
    RUNTIME_PACKAGES=()  # edgeops[agent] brings ai-edge-litert on these
    ;;
*)
    echo "install.sh: unsupported machine $MACHINE" >&2
    exit 1
    ;;
esac

say "system packages"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip
fi

say "service user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --user-group --no-create-home --home-dir /var/lib/edgeops \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi

say "virtual environment $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv "$VENV"
fi
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    "${SOURCE}[agent]" ${RUNTIME_PACKAGES[@]+"${RUNTIME_PACKAGES[@]}"}
# The unit runs the agent with PYTHONOPTIMIZE=2 and may not write under $PREFIX: compile
# the optimized bytecode once here instead of at every start.
run "$VENV/bin/python" -OO -m compileall -q "$VENV/lib"

say "configuration $CONFIG_DIR"
run install -d -m 0755 "$CONFIG_DIR"
if [ -n "$CONFIG" ]; then
    run install -m 0640 -g "$SERVICE_USER" "$CONFIG" "$CONFIG_DIR/agent.toml"
fi

say "systemd unit $UNIT_DIR/$UNIT_NAME"
unit_source="$HERE/$UNIT_NAME"
if [ ! -f "$unit_source" ]; then
    # run from elsewhere: take the unit shipped in the installed package
    unit_source=$("$VENV/bin/python" -c \
        'from edgeops.hardware import asset_path; print(asset_path("edgeops-agent.service"))')
fi
if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ install %s -> %s (ExecStart under %s)\n' "$unit_source" "$UNIT_DIR/$UNIT_NAME" "$VENV"
else
    tmp_unit=$(mktemp)
    trap 'rm -f "$tmp_unit"' EXIT
    sed "s#/opt/edgeops/venv#$VENV#g" "$unit_source" >"$tmp_unit"
    if ! cmp -s "$tmp_unit" "$UNIT_DIR/$UNIT_NAME"; then
        install -m 0644 "$tmp_unit" "$UNIT_DIR/$UNIT_NAME"
    fi
fi

# The unit's MemoryMax fits a Raspberry Pi 3; a drop-in sets the detected board's own limit.
say "memory limit from the board profile"
dropin_dir="$UNIT_DIR/$UNIT_NAME.d"
if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ write %s/memory.conf with MemoryMax from edgeops.hardware.detect_board()\n' "$dropin_dir"
else
    memory_mb=$("$VENV/bin/python" -c \
        'from edgeops.hardware import detect_board; print(detect_board().agent_memory_max_mb)')
    install -d -m 0755 "$dropin_dir"
    printf '[Service]\nMemoryHigh=%sM\nMemoryMax=%sM\n' \
        "$((memory_mb * 3 / 4))" "$memory_mb" >"$dropin_dir/memory.conf"
fi
run systemctl daemon-reload
run systemctl enable "$UNIT_NAME"

if [ "$START" -eq 1 ]; then
    if [ -f "$CONFIG_DIR/agent.toml" ] || [ -n "$CONFIG" ]; then
        run systemctl restart "$UNIT_NAME"
        say "started; logs: journalctl -u $UNIT_NAME -f"
    else
        say "installed but not started: put the agent's configuration in $CONFIG_DIR/agent.toml"
        say "(edgeops agent run --bootstrap FILE writes it), then: systemctl start $UNIT_NAME"
    fi
fi
