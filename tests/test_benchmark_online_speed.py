"""benchmarks/online_speed.py in its --quick mode: both loops run, each the env steps and updates it was asked for,
and the result JSON has the figures docs/results.md quotes (a smoke test: no rate is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "online_speed.py"
HORIZON = 30  # reach2d's control steps per episode
RATES = ("env_steps_per_s", "updates_per_s", "loop_env_steps_per_s")


def test_quick_run_times_both_loops_for_the_asked_env_steps_and_updates(tmp_path):
    out = tmp_path / "online_speed.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--utd", "1,4", "--threads", "1", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "online_speed" and "--quick" in result["command"]
    assert len(result["machine"]["load_average"]) == 3 and result["machine"]["device"] == "cpu"
    settings = result["settings"]
    assert settings["quick"] and settings["utd"] == [1, 4] and settings["horizon"] == HORIZON
    assert result["check"]["ok"], result["check"]  # the plain update is robot_stack's math
    assert [row["utd"] for row in result["rows"]] == [1, 4]
    for row in result["rows"]:
        utd = row["utd"]
        timed = settings["rounds"] * HORIZON  # --quick: one episode per round
        total = timed + settings["warmup_episodes"] * HORIZON
        # The whole run: robot_stack's online loop did utd updates per env step, and the plain loop the same.
        assert (row["run_env_steps"], row["run_updates"]) == (total, total * utd)
        assert (row["plain_env_steps"], row["plain_updates"]) == (total, total * utd)
        for side in ("robot_stack", "plain"):
            figures = row[side]
            assert (figures["env_steps"], figures["updates"]) == (timed, timed * utd), side
            assert len(figures["round_loop_env_steps_per_s"]) == settings["rounds"]
            assert all(figures[key] > 0 for key in RATES), figures
            assert 0 < figures["update_s"] < figures["seconds"]
        assert 0 < row["robot_stack"]["dataset_commit_s"] < row["robot_stack"]["seconds"] - row["robot_stack"]["update_s"]
        assert set(row["ratio"]) == set(RATES)
        assert row["ratio"]["updates_per_s"] == round(row["robot_stack"]["updates_per_s"] / row["plain"]["updates_per_s"], 3)
    assert f"wrote {out}" in done.stdout and "ratio" in done.stdout
