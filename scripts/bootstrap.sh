# Sourced by scripts/run_demo.sh and scripts/run_tests.sh (also runnable alone: `bash scripts/bootstrap.sh`).
#
# 1. installs the Debian packages the stack needs at run time, when missing (root, or sudo);
# 2. makes .venv and installs the project into it (`pip install -e ".[all,test]"`), only when the
#    install inputs changed since the last successful install (stamp file .venv/.robot_stack-install);
# 3. exports the loopback-only environment every run uses, and puts .venv/bin first on PATH.
#
# Written for `set -euo pipefail` callers: every step that may fail is checked here.

# Debian package -> what shows it is there (a shared library in ld.so's cache, or a command). Checked by
# what they provide, not by package name, so renamed packages (Debian 13's libglib2.0-0t64) count too.
# OSMesa renders MuJoCo without a GPU; strace is used by tests that check what a process sends; robosuite
# imports OpenCV (opencv-python), which needs libGL and GLib from the system. Chromium opens the demo's HTML
# report headless in its test (tests/test_main_job.py skips that check without it).
ROBOT_STACK_APT_PACKAGES=(libosmesa6 strace libgl1 libglib2.0-0 chromium)
declare -A ROBOT_STACK_APT_PROVIDES=(
    [libosmesa6]="lib:libOSMesa.so"
    [strace]="command:strace"
    [libgl1]="lib:libGL.so.1"
    [libglib2.0-0]="lib:libglib-2.0.so.0"
    [chromium]="command:chromium"
)
ROBOT_STACK_MIN_PYTHON="3.11"

_rs_log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Runs its arguments as root: directly when root, else through sudo; returns 1 when neither is possible.
_rs_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

_rs_can_be_root() { [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null 2>&1; }

_rs_apt_updated=0
# apt-get install the given packages; runs `apt-get update` once first. Returns non-zero on failure.
_rs_apt_install() {
    if [[ $_rs_apt_updated -eq 0 ]]; then
        _rs_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        _rs_apt_updated=1
    fi
    _rs_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# True when what a package provides ("lib:SONAME" or "command:NAME") is on this machine.
_rs_provided() {
    local kind=${1%%:*} name=${1#*:} libraries
    if [[ $kind == command ]]; then
        command -v "$name" >/dev/null 2>&1
    else
        libraries=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null) || return 1
        [[ $libraries == *$'\t'"$name"* ]]  # ldconfig -p lines: TAB soname ...
    fi
}

_rs_install_debian_packages() {
    local missing=() package
    for package in "${ROBOT_STACK_APT_PACKAGES[@]}"; do
        _rs_provided "${ROBOT_STACK_APT_PROVIDES[$package]}" || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        _rs_log "not a Debian system (no apt-get): install ${missing[*]} (or their equivalents) yourself"
        return 0
    fi
    if ! _rs_can_be_root; then
        _rs_log "skipping apt-get install ${missing[*]}: not root and no sudo (tests that need them will fail)"
        return 0
    fi
    _rs_log "apt-get install ${missing[*]}"
    # A failed install (no mirror reachable, no sudo rights) should not stop the tests that do not need them.
    _rs_apt_install "${missing[@]}" || _rs_log "warning: could not install ${missing[*]}; continuing without"
}

# Prints the first python3 on PATH that is >= ROBOT_STACK_MIN_PYTHON ($PYTHON first, when set).
_rs_find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import sys; sys.exit(sys.version_info < (${ROBOT_STACK_MIN_PYTHON/./, }))" 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

_rs_make_venv() {
    # A .venv whose interpreter no longer runs (moved folder, removed python) is made again.
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
        return 0
    fi
    local python
    if ! python=$(_rs_find_python); then
        if _rs_can_be_root && command -v apt-get >/dev/null 2>&1; then
            _rs_log "no python3 >= $ROBOT_STACK_MIN_PYTHON found: apt-get install python3 python3-venv"
            _rs_apt_install python3 python3-venv || true
        fi
        if ! python=$(_rs_find_python); then
            _rs_log "error: robot_stack needs Python >= $ROBOT_STACK_MIN_PYTHON; found: $(python3 --version 2>&1 || echo 'no python3')." \
                "Install one (Debian 12: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.x"
            return 1
        fi
    fi
    _rs_log "creating .venv with $python ($("$python" --version 2>&1))"
    rm -rf .venv
    if ! "$python" -m venv .venv; then
        # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
        rm -rf .venv
        if _rs_can_be_root && command -v apt-get >/dev/null 2>&1; then
            _rs_log "python venv support missing: apt-get install python3-venv"
            _rs_apt_install python3-venv || true
        fi
        "$python" -m venv .venv || {
            _rs_log "error: '$python -m venv .venv' failed; on Debian: apt-get install python3-venv"
            return 1
        }
    fi
}

# The install inputs: what pip reads, plus where the checkout is (an editable install points at it) and the interpreter.
_rs_install_stamp() {
    {
        cat pyproject.toml setup.py setup.cfg scripts/constraints.txt
        printf '%s\n' "$PWD"
        .venv/bin/python -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

_rs_install_project() {
    local stamp_file=.venv/.robot_stack-install stamp
    stamp=$(_rs_install_stamp) || return 1
    # The console script too: a pip uninstall of robot_stack alone leaves the stamp behind.
    if [[ -f $stamp_file && $(cat "$stamp_file") == "$stamp" && -x .venv/bin/robot-stack ]]; then
        return 0
    fi
    _rs_log "installing robot_stack into .venv: pip install -e \".[all,test]\" (first time: several minutes, torch's CUDA build is a few GB)"
    rm -f "$stamp_file"
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip "setuptools>=69" wheel || return 1
    # scripts/constraints.txt keeps pip off the CPU-only torch wheel that some machines offer through a
    # configured find-links folder (it outranks PyPI's build of the same version); see that file.
    .venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[all,test]" || return 1
    local torch_version
    torch_version=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))') || return 1
    if [[ $torch_version == *+cpu* ]]; then
        _rs_log "error: pip installed torch $torch_version (CPU-only build); expected PyPI's torch. Check scripts/constraints.txt"
        return 1
    fi
    printf '%s\n' "$stamp" >"$stamp_file"
    _rs_log "installed (torch $torch_version)"
}

_rs_export_environment() {
    export VIRTUAL_ENV="$PWD/.venv"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
    # Loopback only, always (ARCHITECTURE.md): ROS 2's discovery range, and no static peers elsewhere.
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
    unset ROS_STATIC_PEERS
    # A random domain and a per-run Cyclone DDS discovery tag keep concurrent runs on one machine apart.
    # 1..101 is ROS 2's safe range on Linux: higher domains' ports fall into the ephemeral port range.
    export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 101 + 1))}"
    export ROBOT_STACK_DDS_TAG="${ROBOT_STACK_DDS_TAG:-run-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}"
    export ROBOT_STACK_ROS_BACKEND="${ROBOT_STACK_ROS_BACKEND:-dds}"
    if [[ -z ${MUJOCO_GL:-} ]]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
            export MUJOCO_GL=egl
        else
            export MUJOCO_GL=osmesa
        fi
    fi
    export PYTHONUNBUFFERED=1
}

_rs_set_up() {
    _rs_install_debian_packages || return 1
    _rs_make_venv || return 1
    _rs_install_project || {
        _rs_log "error: installing robot_stack into .venv failed (see pip's output above)"
        return 1
    }
}

_rs_bootstrap() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 1
    # One setup at a time per checkout: two runs started together would otherwise both pip-install into
    # .venv at once and leave it broken. The lock lives outside the checkout, keyed by its path.
    local lock
    lock="${TMPDIR:-/tmp}/robot_stack-bootstrap-$(printf '%s' "$PWD" | sha256sum | cut -c1-16).lock"
    (
        if command -v flock >/dev/null 2>&1; then
            flock -n 9 || { _rs_log "waiting for another bootstrap of $PWD to finish"; flock 9; }
        fi
        _rs_set_up
    ) 9>"$lock" || return 1
    _rs_export_environment
    _rs_log "ready: $(.venv/bin/python --version 2>&1), backend $ROBOT_STACK_ROS_BACKEND, ROS_DOMAIN_ID=$ROS_DOMAIN_ID," \
        "ROBOT_STACK_DDS_TAG=$ROBOT_STACK_DDS_TAG, loopback only, MUJOCO_GL=$MUJOCO_GL"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    _rs_bootstrap
else
    _rs_bootstrap || return 1
fi
