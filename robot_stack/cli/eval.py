"""``robot-stack eval MODEL``: an exported model's success rate in the sim, through the policy node or --direct.

The node path is the deployment's own: launch/deploy.launch.yaml starts the sim robot node and the policy node
(the model, the safety filter, the watchdog) as processes talking DDS, and this command resets the sim between
episodes on /sim/reset and reads /sim/success and /clock. It runs on a DDS discovery tag of its own, on
localhost only, so it never drives or hears any other robot on the same domain. ``--direct`` runs the same
model (onnxruntime, the same safety filter) in the task's gymnasium env with learn.evaluate's loop. Both
count an episode as reset(seed + i) followed by the task's horizon of control steps, successful when
/sim/success (info["success"]) held at any of its states, so the two rates agree within noise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Self

import numpy as np

from robot_stack.cli import arguments
from robot_stack.errors import DeployError

DESCRIPTION = """\
Run an exported model (ONNX + model card) in the sim task it was trained on and report its success rate:
by default through the real deployment path (the sim robot node and the policy node over DDS, started from
launch/deploy.launch.yaml, on localhost and a discovery tag of their own), with --direct straight in the
task's gymnasium env. Episode i is placement seed SEED + i, run for the task's horizon; it succeeds if the
task reported success at any step."""

EPILOG = """\
examples:
  robot-stack eval models/reach2d_bc.onnx --episodes 20
  robot-stack eval models/reach2d_bc.onnx --episodes 20 --direct
  robot-stack eval models/lift_iql.onnx --episodes 10 --realtime --json

The node path steps the sim once per command (lockstep) unless --realtime, where the sim runs at its
control rate on the wall clock as a robot does. A model that is not for a sim task, or that the policy node
refuses, is a one-line error, exit 2."""

STARTUP_TIMEOUT_S = 180.0  # the launch's processes import, start onnxruntime and warm up on a loaded machine
STOP_TIMEOUT_S = 20.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="an exported model's success rate in the sim (policy node or --direct)",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="the .onnx file (made by robot-stack export)")
    parser.add_argument("--episodes", type=arguments.positive_int, default=20, help="episodes (default 20)")
    parser.add_argument("--seed", type=arguments.non_negative_int, default=1000,
                        help="placement seed of episode 0, then +1 each (default 1000, away from sim_collect's 0..)")
    parser.add_argument("--direct", action="store_true", help="run in the gymnasium env, not through the nodes")
    parser.add_argument("--realtime", action="store_true",
                        help="node path: the sim steps at its control rate on the wall clock (default: lockstep)")
    parser.add_argument("--dynamics", default="nominal", help="sim dynamics preset (default nominal)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where onnxruntime runs the model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robot_stack.deploy.card import read_card

    card = read_card(args.model)
    task = sim_task(card)
    if args.direct:
        result = evaluate_direct(args.model, args.episodes, args.seed, device=args.device, dynamics=args.dynamics)
    else:
        result = evaluate_node(args.model, args.episodes, args.seed, realtime=args.realtime, device=args.device,
                               dynamics=args.dynamics)
    result.update(model=str(args.model), task=task)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    wins = sum(row["success"] for row in result["rows"])
    print(f"{args.model}: success rate {result['success_rate']:.2f} ({wins}/{result['episodes']} episodes, seeds "
          f"{args.seed}..{args.seed + args.episodes - 1}) in the sim task {task}, {result['path']}")
    status = result.get("policy_status")
    if status:
        print(f"policy node: {status['steps']} steps, held {status['held']} (stale {status['stale']}), clipped "
              f"{status['clipped']}, missed {status['missed']}; inference p50/p99 {_ms(status['inference_ms'])}, "
              f"end to end {_ms(status['end_to_end_ms'])}")
    return 0


def _ms(figures: dict[str, Any]) -> str:
    if not figures.get("n"):
        return "-"
    return f"{figures['p50']:.3f}/{figures['p99']:.3f} ms"


def sim_task(card: Any) -> str:
    from robot_stack.learn.evaluate import sim_task_of

    task = sim_task_of(card.robot)
    if task is None:
        raise DeployError(f"model {card.name} was trained on a real robot ({card.robot.get('name')}): there is no sim "
                          "task to evaluate it in")
    return task


def _cameras(card: Any) -> list[str]:
    return [f"{name[len('image.'):]}:{shape[0]}x{shape[1]}" for name, shape in card.spec.images.items()]


# ------------------------------------------------------------------------------------------- direct


def evaluate_direct(model: str | Path, episodes: int, seed: int, *, device: str = "cpu",
                    dynamics: str = "nominal") -> dict[str, Any]:
    """learn.evaluate's loop in the task's gymnasium env, with the model in onnxruntime behind the node's safety
    filter (default limits: the command bounds), fed from the env's observation by the card's raw_state."""
    from robot_stack.deploy.card import raw_state
    from robot_stack.deploy.controller import load_policy
    from robot_stack.deploy.safety import SafetyFilter, SafetyLimits
    from robot_stack.learn.evaluate import evaluate, make_env
    from robot_stack.learn.observations import env_key

    policy = load_policy(model, device=device)
    card, spec = policy.card, policy.card.spec
    safety = SafetyFilter(SafetyLimits.from_card(card))
    env = make_env(sim_task(card), spec, dynamics=dynamics, control_hz=card.rate_hz)

    def act(observation: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {"state": raw_state(spec, {name: np.asarray(observation[env_key(name)])[None] for name in spec.state})}
        for name in spec.images:
            inputs[name] = np.ascontiguousarray(observation[env_key(name)], np.uint8)[None]
        return safety(policy(inputs))[0]

    try:
        result = evaluate(act, env, episodes, seed)
    finally:
        env.close()
    return {**result, "path": "direct (gymnasium env)"}


# ------------------------------------------------------------------------------------------- node path


def evaluate_node(model: str | Path, episodes: int, seed: int, *, realtime: bool = False, device: str = "cpu",
                  dynamics: str = "nominal") -> dict[str, Any]:
    """The episodes through deploy.launch.yaml's sim robot and policy node; rows as learn.evaluate's, plus the
    policy node's last status."""
    from robot_stack.deploy.card import read_card
    from robot_stack.launch.package import package_share_directory
    from robot_stack.learn.evaluate import make_env

    card = read_card(model)
    task = sim_task(card)
    env = make_env(task, card.spec, control_hz=card.rate_hz)
    horizon = int(env.unwrapped.task.config.horizon)
    env.close()
    launch_file = package_share_directory() / "launch" / "deploy.launch.yaml"
    launch_args = [f"model:={Path(model).resolve()}", f"task:={task}", f"control_hz:={card.rate_hz:g}",
                   f"realtime:={'true' if realtime else 'false'}", f"dynamics:={dynamics}", f"device:={device}",
                   f"cameras:={','.join(_cameras(card))}", f"seed:={seed}"]
    # Its own discovery tag on localhost: the sim this starts must not reach a robot on the user's domain.
    env_vars = {"ROBOT_STACK_ROS_BACKEND": "dds", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "ROBOT_STACK_DDS_TAG": f"robot-stack-eval-{uuid.uuid4().hex[:12]}"}
    saved = {name: os.environ.get(name) for name in env_vars}
    os.environ.update(env_vars)
    descriptor, name = tempfile.mkstemp(prefix="robot-stack-eval-", suffix=".log")
    os.close(descriptor)
    log_path = Path(name)
    try:
        with log_path.open("w") as log:
            launch = subprocess.Popen([sys.executable, "-m", "robot_stack.cli.main", "launch", str(launch_file),
                                       *launch_args], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            with _EvalNode(launch, log_path) as node:
                node.wait_until_ready()
                rows = [{"seed": seed + i, "success": node.episode(seed + i, horizon)} for i in range(episodes)]
                status = node.final_status()
        finally:
            _stop(launch)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    log_path.unlink(missing_ok=True)
    mode = "real time" if realtime else "lockstep"
    return {"episodes": episodes, "success_rate": float(np.mean([row["success"] for row in rows])), "rows": rows,
            "path": f"through the policy node over DDS ({mode})", "policy_status": status}


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _EvalNode:
    """This command's node: /sim/reset out; /clock, /sim/success and /policy/status in.

    The sim driver publishes /clock then /sim/success once per state it reaches (a reset repeats the clock
    value, a step advances it), so the k-th message of one topic and the (k - offset)-th of the other describe
    the same state; the offset is fixed once, at a moment when no message is on its way."""

    def __init__(self, launch: subprocess.Popen, log: Path) -> None:
        self.launch, self.log = launch, log
        self.clocks: list[int] = []
        self.successes: list[bool] = []
        self.status: dict[str, Any] | None = None
        self.offset = 0
        self.last_arrival = 0.0

    def __enter__(self) -> Self:
        from robot_stack import ros

        self.ros = ros
        ros.init([])
        self.node = ros.create_node(f"_robot_stack_eval_{os.getpid()}")
        reliable = ros.qos.DEFAULT.with_depth(1000)
        self.node.create_subscription("rosgraph_msgs/msg/Clock", "/clock", self._on_clock, reliable)
        self.node.create_subscription("std_msgs/msg/Bool", "/sim/success", self._on_success, reliable)
        self.node.create_subscription("std_msgs/msg/String", "/policy/status", self._on_status, ros.qos.TRANSIENT_LOCAL)
        self.reset_pub = self.node.create_publisher("std_msgs/msg/Int64", "/sim/reset", ros.qos.DEFAULT)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.node.destroy_node()
        self.ros.shutdown()

    def _on_clock(self, message) -> None:
        self.clocks.append(message.clock.sec * 1_000_000_000 + message.clock.nanosec)
        self.last_arrival = time.monotonic()

    def _on_success(self, message) -> None:
        self.successes.append(bool(message.data))
        self.last_arrival = time.monotonic()

    def _on_status(self, message) -> None:
        try:
            self.status = json.loads(message.data)
        except ValueError:
            pass

    def _spin_until(self, done, timeout_s: float, waiting_for: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.launch.poll() is not None:
                raise DeployError(f"the deployment stopped while {waiting_for}: {self._failure()}")
            if not self.ros.ok():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise DeployError(f"timed out after {timeout_s:g} s {waiting_for} (the launch's output: {self.log})")
            self.ros.spin_once(self.node, 0.01)

    def _failure(self) -> str:
        """The line that says why the launch ended: the policy node's refusal (FATAL) or the last error."""
        lines = self.log.read_text(errors="replace").splitlines()
        for level in ("[FATAL]", "[ERROR]", "error:"):
            found = [line for line in lines if level in line]
            if found:
                return found[-1].split("]: ", 1)[-1].strip()
        return f"it exited with status {self.launch.returncode} (its output: {self.log})"

    def wait_until_ready(self) -> None:
        """The policy node is up (its first status), the sim is stepping, and /sim/reset reaches the sim."""
        self._spin_until(lambda: self.status is not None and len(self.clocks) >= 3 and len(self.successes) >= 3
                         and self.reset_pub.get_subscription_count() > 0, STARTUP_TIMEOUT_S,
                         "waiting for the sim robot and the policy node to start")
        # A quiet moment: every state's /clock and /sim/success have both arrived.
        self._spin_until(lambda: time.monotonic() - self.last_arrival > 0.015, 30.0, "waiting for the sim to settle")
        self.offset = len(self.clocks) - len(self.successes)

    def episode(self, seed: int, horizon: int) -> bool:
        """Reset to `seed`, wait for `horizon` steps after it; True if /sim/success held at any of those states."""
        seen = len(self.clocks)
        self.reset_pub.publish(self.ros.message_class("std_msgs/msg/Int64")(data=seed))

        def reset_index() -> int | None:
            for k in range(max(seen, 1), len(self.clocks)):
                if self.clocks[k] <= self.clocks[k - 1]:  # a reset repeats the clock; a step advances it
                    return k
            return None

        self._spin_until(lambda: reset_index() is not None, 60.0, f"waiting for the sim to reset to seed {seed}")
        start = reset_index()
        last = start + horizon
        timeout = 60.0 + 20.0 * horizon / self._rate()
        self._spin_until(lambda: len(self.clocks) > last and len(self.successes) + self.offset > last, timeout,
                         f"waiting for {horizon} steps of the episode with seed {seed}")
        return any(self.successes[k - self.offset] for k in range(start, last + 1))

    def final_status(self) -> dict[str, Any]:
        """The policy node's first status sent after the last episode (it sends a few a second)."""
        ended = time.time()
        self._spin_until(lambda: self.status["time"] > ended, 30.0, "waiting for the policy node's last status")
        return self.status

    def _rate(self) -> float:
        return float((self.status or {}).get("rate_hz") or 20.0)
