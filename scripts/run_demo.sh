#!/usr/bin/env bash
# The demo (README): bootstrap (the Debian packages, .venv, the loopback-only DDS environment), then the main
# job end to end in simulation, `robot-stack demo` (docs/demo.md): the sim robot, the scripted teleop and the
# recorder over DDS record episodes of mixed skill; a download-free labeler labels their rewards and label eval
# scores them; IQL trains on the labels and BC as the baseline; both are exported, verified and run through the
# policy node against the sim robot; a summary table and runs/demo/report.html. Extra arguments go to
# `robot-stack demo` (e.g. `--full` on a GPU workstation, `--episodes 20`, `--out runs/my_demo`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

exec robot-stack demo "$@"
