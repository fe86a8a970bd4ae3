#!/usr/bin/env bash
# The demo (README): bootstrap, run the demo launch file, print a one-line summary.
# Extra arguments go to the launch (e.g. `bash scripts/run_demo.sh duration:=3`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

# What the demo runs: swap this line for the end-to-end demo when it exists.
DEMO=(robot-stack launch launch/demo.launch.yaml duration:=10)

mkdir -p runs
log=runs/demo.log
started=$(date +%s.%N)
status=0
"${DEMO[@]}" "$@" 2>&1 | tee "$log" || status=$?
seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

outcome=$([[ $status -eq 0 ]] && echo "ok" || echo "FAILED (exit $status)")
echo "demo: $outcome in ${seconds} s: ${DEMO[*]}${*:+ $*} (backend $ROBOT_STACK_ROS_BACKEND, ROS_DOMAIN_ID $ROS_DOMAIN_ID, loopback only); log: $log"
exit "$status"
