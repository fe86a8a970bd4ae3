"""`robot-stack eval`: a BC policy trained and exported in the test, run through the sim robot and policy nodes over
DDS (deploy.launch.yaml, lockstep) and straight in the gymnasium env: well above a random policy, and the two
paths agree episode by episode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, fresh_dds_env
from deploy_models import reach2d_models

EPISODES = 10
SEED = 1000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return reach2d_models(tmp_path_factory.mktemp("deploy"))


def robot_stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_stack.cli.main", *args], cwd=REPO, env=fresh_dds_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def random_success_rate() -> float:
    from robot_stack.learn.evaluate import evaluate, make_env
    from robot_stack.learn.observations import ObservationSpec

    env = make_env("reach2d", ObservationSpec(state={}, mean=[], std=[]))
    rng = np.random.default_rng(0)
    try:
        return evaluate(lambda _obs: rng.uniform(-1.0, 1.0, 2), env, EPISODES, SEED)["success_rate"]
    finally:
        env.close()


def test_eval_through_the_node_beats_random_and_agrees_with_direct(models):
    node = robot_stack("eval", str(models["bc"]), "--episodes", str(EPISODES), "--seed", str(SEED), "--json")
    assert node.returncode == 0, node.stderr
    direct = robot_stack("eval", str(models["bc"]), "--episodes", str(EPISODES), "--seed", str(SEED), "--direct",
                         "--json")
    assert direct.returncode == 0, direct.stderr
    node_result, direct_result = json.loads(node.stdout), json.loads(direct.stdout)
    assert "policy node" in node_result["path"] and "direct" in direct_result["path"]
    assert [row["seed"] for row in node_result["rows"]] == list(range(SEED, SEED + EPISODES))
    random_rate = random_success_rate()
    assert node_result["success_rate"] >= 0.6 and node_result["success_rate"] >= random_rate + 0.4, (
        node_result, random_rate)
    assert abs(node_result["success_rate"] - direct_result["success_rate"]) <= 0.2
    same = sum(a["success"] == b["success"] for a, b in zip(node_result["rows"], direct_result["rows"]))
    assert same >= EPISODES - 2, (node_result["rows"], direct_result["rows"])
    status = node_result["policy_status"]
    # The episodes ran on the model's commands: most steps were the model's, none with NaN or Inf.
    assert status["steps"] >= EPISODES * 30 and status["held"] < status["steps"] / 10 and status["nonfinite"] == 0


def test_eval_says_in_one_line_why_the_policy_node_refused_the_model(models, tmp_path):
    shutil.copy(models["bc"], tmp_path / "bc.onnx")
    card = json.loads(models["bc"].with_suffix(".json").read_text())
    card["onnx_sha256"] = "0" * 64
    (tmp_path / "bc.json").write_text(json.dumps(card))
    result = robot_stack("eval", str(tmp_path / "bc.onnx"), "--episodes", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robot-stack eval: error: ") and "does not match" in lines[0], (
        result.stderr)
