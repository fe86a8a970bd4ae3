"""The reference Lift policy shipped in models/: its card says how to make it again, it fits the sim Lift robot,
`model verify` says which provenance links a shipped model can prove (the file and its card) and which it
cannot (run folder, dataset), and `robot-stack launch launch/deploy.launch.yaml` runs it with no argument."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from robot_stack.cli.main import main as cli
from robot_stack.deploy.card import check_robot, read_card
from robot_stack.deploy.runtime import OnnxPolicy
from robot_stack.record import load_config
from robot_stack.sim.task import command_spec_of

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "lift_iql_reference.onnx"


def test_the_reference_card_fits_the_sim_lift_robot_and_says_how_it_was_made():
    card = read_card(MODEL)
    assert card.robot["sim_task"] == "lift" and card.data["algorithm"] == "iql"
    reproduce = card.data["reproduce"]
    assert [command.split()[0:2] for command in reproduce] == [["sim_collect", "--task"], ["robot-stack", "train"],
                                                             ["robot-stack", "export"]]
    assert (card.data["evaluation"] or {}).get("success_rate", 0) >= 0.8  # what it scored when it was trained
    config = load_config(REPO / "launch" / "params" / "recorder_lift.yaml", command_spec_of=command_spec_of)
    features = {f.name: {"shape": f.shape} for f in config.features}
    check_robot(card, config.robot | {"rate_hz": card.rate_hz}, features)  # raises when it does not fit
    policy = OnnxPolicy(MODEL)
    command = policy({"state": np.asarray(card.spec.mean, np.float32)})  # the data's mean observation
    low, high = np.asarray(card.command["low"]), np.asarray(card.command["high"])
    assert command.shape == (7,) and np.all(np.isfinite(command)) and np.all((low <= command) & (command <= high))


def test_verify_proves_the_file_and_its_card_and_says_what_a_shipped_model_cannot(tmp_path, capsys):
    code = cli(["model", "verify", str(MODEL), "--run", str(tmp_path / "no_run"),
                "--dataset", str(tmp_path / "no_dataset.zarr"), "--json"])
    links = {link["link"]: link for link in json.loads(capsys.readouterr().out)["links"]}
    assert code == 1 and links["model file ↔ card"]["status"] == "holds"
    for name in ("card ↔ run config", "card ↔ checkpoint", "run ↔ dataset"):
        assert links[name]["status"] == "missing" and "reproduce commands" in links[name]["fix"], links[name]


def test_deploy_launch_with_no_argument_runs_the_reference_policy_in_the_sim(tmp_path):
    env = os.environ | {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(random.randint(1, 200)),
                        "ROBOT_STACK_DDS_TAG": f"pytest-{uuid.uuid4().hex[:12]}", "ROBOT_STACK_ROS_BACKEND": "dds",
                        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    log = tmp_path / "launch.log"
    with log.open("w") as output:
        launch = subprocess.Popen([sys.executable, "-m", "robot_stack.cli.main", "launch", "launch/deploy.launch.yaml"],
                                  cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while "policy up: model lift_iql_reference" not in log.read_text() and time.monotonic() < deadline:
                assert launch.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
            assert "policy up: model lift_iql_reference" in log.read_text(), log.read_text()[-3000:]
        finally:
            launch.send_signal(signal.SIGINT)
            try:
                launch.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait()
