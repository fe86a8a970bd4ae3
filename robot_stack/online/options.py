"""The robot learner's options (``robot-stack train --online robot``): how episodes are reset, how long they run,
how long to wait for the actor side. Argparse only here: the CLI registers these flags without importing torch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import yaml

from robot_stack.errors import LearnError

RESET_MODES = ("sim", "operator", "joints")


@dataclass(frozen=True)
class RobotOptions:
    """reset: "sim" (the learner publishes /sim/reset and ends episodes on /sim/success), "operator" (the operator
    resets the robot and starts each episode with `start` on /recorder/control), "joints" (the learner sends
    reset_joints on /teleop/command until /joint_states is within reset_tolerance of it [rad], at most
    reset_timeout_s [s]). horizon: control steps per episode (0: the sim task's). actor_timeout_s: how long to
    wait to hear the policy node, the recorder and the sim before giving up [s]."""

    reset: str = "sim"
    reset_joints: tuple[float, ...] = ()
    reset_tolerance: float = 0.05
    reset_timeout_s: float = 30.0
    horizon: int = 0
    actor_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.reset not in RESET_MODES:
            raise LearnError(f"--reset {self.reset}: use one of {', '.join(RESET_MODES)}")
        if self.reset == "joints" and not self.reset_joints:
            raise LearnError("--reset joints needs the target: --reset-joints \"[q1, q2, ...]\" (radians)")
        if self.reset != "sim" and self.horizon <= 0:
            raise LearnError(f"--reset {self.reset} (a real robot) needs --horizon N: the control steps of an episode")
        if self.reset_timeout_s <= 0 or self.actor_timeout_s <= 0:
            raise LearnError("--reset-timeout and --actor-timeout must be positive numbers of seconds")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RobotOptions:
        return cls(reset=args.reset, reset_joints=parse_joints(args.reset_joints), reset_timeout_s=args.reset_timeout,
                   horizon=args.horizon, actor_timeout_s=args.actor_timeout)


def parse_joints(text: str) -> tuple[float, ...]:
    """"[0.1, -0.4]" (or "0.1, -0.4") -> joint positions [rad]; "" -> ()."""
    text = (text or "").strip()
    if not text:
        return ()
    try:
        value = yaml.safe_load(text if text.startswith("[") else f"[{text}]")
    except yaml.YAMLError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise LearnError(f"--reset-joints {text!r}: give the joint positions in radians, e.g. \"[0.0, 1.2]\"")
    return tuple(float(v) for v in value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The robot target's flags, in a group of their own."""
    group = parser.add_argument_group("robot target (--online robot; docs/online.md)")
    group.add_argument("--reset", choices=RESET_MODES, default="sim",
                       help="how an episode starts: sim (/sim/reset), operator (the operator resets the robot and "
                            "sends start on /recorder/control), joints (drive --reset-joints first); default sim")
    group.add_argument("--reset-joints", default="", metavar="\"[Q1, Q2, ...]\"",
                       help="--reset joints: the joint positions [rad] to reach, sent as the command on /teleop/command")
    group.add_argument("--reset-timeout", type=float, default=30.0, metavar="S",
                       help="--reset joints: seconds to reach the target before the learner stops (default 30)")
    group.add_argument("--horizon", type=int, default=0, metavar="N",
                       help="control steps per episode (default: the sim task's; needed on a real robot)")
    group.add_argument("--actor-timeout", type=float, default=120.0, metavar="S",
                       help="seconds to wait to hear the policy node, the recorder and the sim (default 120)")
