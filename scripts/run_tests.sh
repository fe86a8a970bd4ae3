#!/usr/bin/env bash
# The test command (README, .ci/run): bootstrap, then pytest; extra arguments go to pytest
# (e.g. `bash scripts/run_tests.sh tests/test_packaging.py -x`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

status=0
python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    # pytest's 5 is "no tests collected": a test run that tested nothing has failed.
    echo "run_tests: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
