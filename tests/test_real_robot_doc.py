"""docs/real-robot.md's examples against the code: its features file and the launch arguments it names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from robot_stack.deploy.safety import STEP_METRES
from robot_stack.record import parse_config

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "real-robot.md").read_text()


def test_the_guides_features_file_loads_with_the_hold_command_and_step_size_the_policy_node_needs():
    block = re.search(r"## 4\. The features file.*?```yaml\n(.*?)```", DOC, re.S).group(1)
    config = parse_config(yaml.safe_load(block), "docs/real-robot.md")
    spec = config.robot["command_spec"]
    assert spec["hold"] == [0, 0, 0, 0] and len(spec["names"]) == len(spec["low"]) == len(spec["high"]) == 4
    assert float(STEP_METRES.search(config.robot["command"]).group(1)) == 0.01  # the workspace box's step size
    assert {f.name for f in config.features} == {"joint_position", "eef_pose", "action", "image.wrist"}


def test_every_deploy_and_collect_launch_argument_the_guide_uses_exists():
    for launch in ("deploy", "collect"):
        declared = {arg["arg"]["name"] for arg in yaml.safe_load((REPO / "launch" / f"{launch}.launch.yaml").read_text())
                    ["launch"] if "arg" in arg}
        commands = re.findall(rf"robot-stack launch robot_stack {launch}\.launch\.yaml ((?:\\\n|[^\n])*)", DOC)
        used = {name for command in commands for name in re.findall(r"(\w+):=", command)}
        assert used and used <= declared, used - declared
