#!/usr/bin/env bash
# The demo (README): bootstrap, then the collection loop in simulation: the MuJoCo Panda (sim_robot),
# the scripted expert as teleop and the recorder, all over loopback DDS, record 3 Lift episodes to a
# Zarr dataset; then summarize the dataset and draw one episode. Then the train stage on the fast reach2d
# task: a mixed-skill dataset straight from the scripted experts (sim_collect), offline IQL on the CPU or
# GPU, evaluated in the sim. Later stages (label, export, deploy) join here as they land. Extra arguments
# go to the collect launch (e.g. `episodes:=5`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

mkdir -p runs
log=runs/demo.log
dataset=runs/demo_lift.zarr
train_data=runs/demo_reach2d_mixed.zarr
train_run=runs/demo_iql_reach2d
rm -rf "$dataset" "$train_data" "$train_run"
started=$(date +%s.%N)
status=0
{
    robot-stack launch robot_stack collect.launch.yaml task:=lift teleop:=scripted episodes:=3 \
        dataset:="$dataset" "$@" &&
    robot-stack data info "$dataset" &&
    robot-stack data view "$dataset" 0 -o runs/demo_lift_episode0.png &&
    sim_collect --task reach2d --episodes 100 --mix expert=0.2,medium=0.8 -o "$train_data" -q &&
    robot-stack train --algo iql --dataset "$train_data" --reward sim --steps 1000 --eval-every 0 \
        --eval-episodes 20 --out "$train_run" --no-progress
} 2>&1 | tee "$log" || status=$?
seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

outcome=$([[ $status -eq 0 ]] && echo "ok" || echo "FAILED (exit $status)")
success=$(python -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['evaluation']['success_rate']:.0%}\")" \
    "$train_run/result.json" 2>/dev/null || echo "n/a")
echo "demo: $outcome in ${seconds} s: collected $dataset (see runs/demo_lift_episode0.png; backend $ROBOT_STACK_ROS_BACKEND, ROS_DOMAIN_ID $ROS_DOMAIN_ID, loopback only); IQL on reach2d: sim success $success ($train_run); log: $log"
exit "$status"
