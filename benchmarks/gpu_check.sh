#!/usr/bin/env bash
# One GPU check: every figure the benchmarks take on CUDA, and the tests that only run on CUDA, in under
# 8 minutes on an H100.
#
#   bash benchmarks/gpu_check.sh                 # from anywhere; results in benchmarks/results/
#   bash benchmarks/gpu_check.sh --out DIR       # also copies each result JSON and step log into DIR
#   bash benchmarks/gpu_check.sh --budget 900    # a longer budget [s] (default 470)
#
# What runs, each under its own `timeout` and all together under the budget (sizes chosen to fit it):
#   train_speed       benchmarks/train_speed.py --device cuda --algos iql: the compiled + CUDA-graph step
#                     against a plain eager update (benchmarks/results/train_speed.json)
#   label_throughput  benchmarks/label_throughput.py --device cuda: CLIP embedding in fp16 against a per-frame
#                     loop (label_throughput.json)
#   policy_latency    benchmarks/policy_latency.py --device cuda: onnxruntime's CUDA execution provider (I/O
#                     binding, batch 1) beside the CPU and torch, and the policy node end to end over loopback
#                     DDS (policy_latency.json); CUDA EP figures need the gpu extra (onnxruntime-gpu)
#   online_speed      benchmarks/online_speed.py --device cuda: env steps/s and updates/s of the online loop (SAC on
#                     reach2d, UTD 1 and 10; compile + CUDA graphs) against a plain cleanrl-style loop (online_speed.json)
#   tests             the CUDA-only tests: tests/test_learn_trainer.py -k cuda (compiled step = eager step;
#                     compile + CUDA-graph capture of every algorithm), tests/test_clip_embed.py -k cuda (fp16
#                     embeddings match fp32)
# A step whose script is not there yet, or whose Python packages are missing, is skipped with a line saying
# why. The summary lists what ran, what was skipped and what failed, and goes to
# benchmarks/results/gpu_check.json. Exit status: 0 when nothing failed (also on a machine without CUDA,
# where it says so in one line and runs nothing), 1 when a step failed or ran out of time, 2 bad usage or
# no usable Python.
#
# Note: the benchmarks write their usual benchmarks/results/<name>.json, replacing the figures from the
# last machine they ran on (each file names its machine; `git diff benchmarks/results` shows the change).
#
# Python: $PYTHON, else the checkout's .venv (scripts/bootstrap.sh makes it), else python3. It needs the
# project installed (`pip install -e ".[all,test]"`; onnxruntime-gpu for the CUDA EP figures).
#
# On a GPU machine with no network (torch, onnx, onnxruntime and pytest installed; zarr, cyclonedds,
# mujoco, gymnasium and open_clip not), bring the missing packages as wheels. On a machine with network,
# in the repository root (.whl/ is git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl zarr numcodecs donfig google-crc32c cyclonedds rich-click rosbags \
#       mujoco glfw PyOpenGL gymnasium farama-notifications open_clip_torch ftfy wcwidth
#   (pick the versions scripts/constraints.txt and pyproject.toml allow; av, lz4, apsw, ruamel.yaml, robosuite, ray
#   are not needed here; onnxruntime-gpu is too big for a 64 MiB transfer: without it the CUDA EP rows
#   are reported as skipped). Then on the GPU machine, in the copy of the repository:
#   python3 -m pip install -q --no-index --no-deps .whl/*.whl
#   python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
#   bash benchmarks/gpu_check.sh --out "$OUT"
set -uo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUDGET=470
OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT_DIR=$2; shift 2 ;;
        --budget)
            [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] \
                || { echo "gpu_check: --budget needs a whole number of seconds above 0" >&2; exit 2; }
            BUDGET=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (bash benchmarks/gpu_check.sh --help)" >&2; exit 2 ;;
    esac
done

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=python3
fi

cuda=$("$PY" -c "import torch; print(torch.cuda.is_available())" 2>/dev/null) || {
    echo "gpu_check: $PY cannot import torch: source scripts/bootstrap.sh first, or set PYTHON to a Python with the project installed" >&2
    exit 2
}
if [ "$cuda" != "True" ]; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False in $PY): nothing to check; run it on a machine with an NVIDIA GPU"
    exit 0
fi
if [ -n "$OUT_DIR" ]; then  # relative to the folder it was run in
    OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd) || { echo "gpu_check: cannot create the --out folder" >&2; exit 2; }
fi
cd "$REPO" || exit 2
"$PY" -c "import robot_stack" 2>/dev/null || {
    echo "gpu_check: $PY cannot import robot_stack: install the project (see the top of benchmarks/gpu_check.sh)" >&2
    exit 2
}
RESULTS=$REPO/benchmarks/results
mkdir -p "$RESULTS"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
RUNNING=""
trap 'rm -rf "$LOGS"' EXIT
trap '[ -z "$RUNNING" ] || kill -TERM "$RUNNING" 2>/dev/null; wait; echo "gpu_check: interrupted" >&2; exit 130' INT TERM

# Loopback only, a domain and discovery tag of this run's own (as scripts/bootstrap.sh sets them).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unset ROS_STATIC_PEERS
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 101 + 1))}
export ROBOT_STACK_DDS_TAG=${ROBOT_STACK_DDS_TAG:-gpu-check-$RANDOM$RANDOM}
export ROBOT_STACK_ROS_BACKEND=${ROBOT_STACK_ROS_BACKEND:-dds}
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYTHONUNBUFFERED=1

START=$SECONDS
STEPS_TSV=$LOGS/steps.tsv
: > "$STEPS_TSV"

record() {  # name status seconds detail
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS_TSV"
    echo "gpu_check: $1: $2${4:+ ($4)}"
}

# step NAME TIMEOUT_S "MODULES" RESULT_JSON COMMAND... : run COMMAND under timeout and the remaining budget.
step() {
    local name=$1 limit=$2 modules=$3 result=$4
    shift 4
    local script=""
    for word in "$@"; do case "$word" in *.py) script=$word; break ;; esac; done
    if [ -n "$script" ] && [ ! -f "$script" ]; then
        record "$name" skipped 0 "$script does not exist yet"
        return
    fi
    local missing
    missing=$("$PY" - "$modules" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None))
EOF
)
    if [ -n "$missing" ]; then
        record "$name" skipped 0 "needs Python packages: $missing"
        return
    fi
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 15 ]; then
        record "$name" failed 0 "not run: the ${BUDGET} s budget is spent"
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "gpu_check: $name: $* (at most ${limit} s)"
    local began=$SECONDS marker=$LOGS/$name.start log=$LOGS/$name.log
    touch "$marker"
    # In the background so that Ctrl-C here reaches it (timeout runs it in a process group of its own).
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1 &
    RUNNING=$!
    tail -n +1 -f --pid="$RUNNING" "$log"
    wait "$RUNNING"
    local rc=$? took=$((SECONDS - began))
    RUNNING=""
    [ -z "$OUT_DIR" ] || { echo "=== $name: $*"; cat "$log"; } >> "$OUT_DIR/gpu_check.log"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" failed "$took" "timed out after ${limit} s"
    elif [ "$rc" -ne 0 ]; then
        record "$name" failed "$took" "exit status $rc: $(tail -n 1 "$LOGS/$name.log" | cut -c1-200)"
    elif [ -n "$result" ] && [ ! "$RESULTS/$result" -nt "$marker" ]; then
        record "$name" failed "$took" "exit status 0 but benchmarks/results/$result was not written"
    else
        record "$name" passed "$took" ""
        [ -z "$result" ] || [ -z "$OUT_DIR" ] || cp "$RESULTS/$result" "$OUT_DIR/"
    fi
}

XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)  # the compile-heavy tests in parallel (16 cores, one GPU)

step train_speed 130 "torch zarr" train_speed.json \
    "$PY" benchmarks/train_speed.py --device cuda --algos iql --rounds 2
step label_throughput 70 "torch zarr open_clip" label_throughput.json \
    "$PY" benchmarks/label_throughput.py --device cuda --frames 4096 --naive-frames 256 --rounds 2
step policy_latency 70 "torch zarr onnx onnxruntime cyclonedds rosbags" policy_latency.json \
    "$PY" benchmarks/policy_latency.py --device cuda --rounds 2 --seconds 3
step online_speed 150 "torch zarr mujoco gymnasium" online_speed.json \
    "$PY" benchmarks/online_speed.py --device cuda --rounds 2
step tests_trainer_cuda 160 "torch zarr mujoco gymnasium pytest" "" \
    "$PY" -m pytest tests/test_learn_trainer.py -k cuda -q -rs -p no:cacheprovider "${XDIST[@]}"
step tests_clip_cuda 45 "torch zarr open_clip pytest" "" \
    "$PY" -m pytest tests/test_clip_embed.py -k cuda -q -rs -p no:cacheprovider

"$PY" - "$STEPS_TSV" "$RESULTS" "$((SECONDS - START))" "$BUDGET" "$LOGS" <<'EOF'
"""The summary: each step's outcome and the headline figures of the result files it wrote."""
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

steps_tsv, results, total, budget, logs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
steps = []
for line in Path(steps_tsv).read_text().splitlines():
    name, status, seconds, detail = line.split("\t", 3)
    steps.append({"step": name, "status": status, "seconds": int(seconds), "detail": detail})


def load(name):
    try:
        return json.loads((results / name).read_text())
    except (OSError, ValueError):
        return None


def figures(step):
    """Headline figures of a step that passed (a benchmark's JSON or pytest's last line)."""
    name = step["step"]
    if name == "train_speed" and (data := load("train_speed.json")):
        rows = [f"{r['algo']} {r['updates_per_s']:.0f} updates/s vs eager {r['eager_updates_per_s']:.0f} "
                f"({r['ratio']:.2f}x; compile {r['compile']}, CUDA graph {r['cuda_graph']})" for r in data["rows"]]
        return rows + [f"target: {data['target']['result']}"]
    if name == "label_throughput" and (data := load("label_throughput.json")):
        fps = data["frames_per_s"]
        return [f"{fps['robot_stack']:.0f} frames/s (fp16) vs naive {fps['naive']:.0f} ({data['ratio']:.1f}x); "
                f"goal {data['goals']['h100_frames_per_s']} frames/s on an H100"]
    if name == "policy_latency" and (data := load("policy_latency.json")):
        rows = [f"{r['policy']} {r['case']}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms"
                for r in data["inference"] if r["device"] == "cuda"]
        return rows
    if name == "online_speed" and (data := load("online_speed.json")):
        return [f"UTD {r['utd']}: {r['robot_stack']['env_steps_per_s']:.0f} env steps/s, "
                f"{r['robot_stack']['updates_per_s']:.0f} updates/s vs plain {r['plain']['env_steps_per_s']:.0f}, "
                f"{r['plain']['updates_per_s']:.0f} ({r['ratio']['env_steps_per_s']:.2f}x, "
                f"{r['ratio']['updates_per_s']:.2f}x)" for r in data["rows"]]
    if name.startswith("tests_"):
        lines = [line for line in (logs / f"{name}.log").read_text().splitlines() if line.strip()]
        return lines[-1:]
    return []


for step in steps:
    step["figures"] = figures(step) if step["status"] == "passed" else []
    if step["step"].startswith("tests_") and step["status"] == "passed" and " passed" not in "".join(step["figures"]):
        step["status"], step["detail"] = "failed", "no test ran (every CUDA test skipped?)"
cuda_note = (load("policy_latency.json") or {}).get("settings", {}).get("cuda_note")
if cuda_note and any(s["step"] == "policy_latency" and s["status"] == "passed" for s in steps):
    steps.append({"step": "policy_latency_cuda_ep", "status": "skipped", "seconds": 0, "detail": cuda_note,
                  "figures": []})
counts = {s: sum(1 for step in steps if step["status"] == s) for s in ("passed", "skipped", "failed")}
summary = {"benchmark": "gpu_check", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "machine": {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "platform": platform.platform()},
           "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda},
           "budget_s": budget, "seconds": total, "counts": counts, "steps": steps}
(results / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")

print(f"\ngpu_check on {summary['machine']['gpu']}: {total} s of a {budget} s budget")
for step in steps:
    print(f"  {step['status']:8s} {step['step']:24s} {step['seconds']:4d} s  {step['detail']}")
    for line in step["figures"]:
        print(f"           {line}")
print(f"{counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed; "
      f"summary in {results / 'gpu_check.json'}")
sys.exit(1 if counts["failed"] else 0)
EOF
status=$?
[ -z "$OUT_DIR" ] || cp "$RESULTS/gpu_check.json" "$OUT_DIR/" 2>/dev/null
[ "$status" -eq 0 ] || exit 1
