#!/usr/bin/env bash
# The demo (README): bootstrap, then the collection loop in simulation: the MuJoCo Panda (sim_robot),
# the scripted expert as teleop and the recorder, all over loopback DDS, record 3 Lift episodes to a
# Zarr dataset; then summarize the dataset and draw one episode. Later stages (label, train, export,
# deploy) join here as they land. Extra arguments go to the collect launch (e.g. `episodes:=5`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

mkdir -p runs
log=runs/demo.log
dataset=runs/demo_lift.zarr
rm -rf "$dataset"
started=$(date +%s.%N)
status=0
{
    robot-stack launch launch/collect.launch.yaml task:=lift teleop:=scripted episodes:=3 \
        dataset:="$dataset" "$@" &&
    robot-stack data info "$dataset" &&
    robot-stack data view "$dataset" 0 -o runs/demo_lift_episode0.png
} 2>&1 | tee "$log" || status=$?
seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

outcome=$([[ $status -eq 0 ]] && echo "ok" || echo "FAILED (exit $status)")
echo "demo: $outcome in ${seconds} s: collected $dataset (see runs/demo_lift_episode0.png; backend $ROBOT_STACK_ROS_BACKEND, ROS_DOMAIN_ID $ROS_DOMAIN_ID, loopback only); log: $log"
exit "$status"
