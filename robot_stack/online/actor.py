"""The learner's side of the ROS 2 link to the actor: what it sends to and hears from the policy node, the recorder
and the sim, and the two things it does with them without blocking the training loop: run episodes
(``EpisodeDriver``) and hand new models over (``ModelPusher``). Topics are ARCHITECTURE.md's defaults.

Everything here is polled: the learner calls ``ActorLink.spin`` and the ``poll`` methods between gradient updates,
so one thread trains and talks, and a slow update only delays when the next control word leaves, never what the
robot does (the policy node runs it). Times are seconds on the monotonic clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.errors import RosError
from robot_stack.online.options import RobotOptions

QUIET_S = 0.015  # no /clock or /sim/success arrived for this long: every state's pair has arrived


class ActorLink:
    """The learner's node: /sim/reset, /recorder/control, /policy/load and /teleop/command out; /recorder/status,
    /policy/status, /clock, /sim/success and /joint_states in (the last three only where the reset mode uses them).
    """

    def __init__(self, ros: Any, options: RobotOptions, node_name: str) -> None:
        self.ros, self.options = ros, options
        self.node = ros.create_node(node_name)
        self.log = self.node.get_logger()
        self.recorder_status: dict[str, Any] | None = None
        self.policy_status: dict[str, Any] | None = None
        self.clocks: list[int] = []  # ns, one per sim state (a reset repeats the clock, a step advances it)
        self.successes: list[bool] = []
        self.joint_position: np.ndarray | None = None
        self.last_arrival = 0.0
        reliable = ros.qos.DEFAULT
        self.control_pub = self.node.create_publisher("std_msgs/msg/String", "/recorder/control", reliable)
        self.load_pub = self.node.create_publisher("std_msgs/msg/UInt8MultiArray", "/policy/load", reliable.with_depth(1))
        self.node.create_subscription("std_msgs/msg/String", "/recorder/status", self._on_recorder,
                                      ros.qos.TRANSIENT_LOCAL)
        self.node.create_subscription("std_msgs/msg/String", "/policy/status", self._on_policy, ros.qos.TRANSIENT_LOCAL)
        if options.reset == "sim":
            self.reset_pub = self.node.create_publisher("std_msgs/msg/Int64", "/sim/reset", reliable)
            self.node.create_subscription("rosgraph_msgs/msg/Clock", "/clock", self._on_clock, reliable.with_depth(1000))
            self.node.create_subscription("std_msgs/msg/Bool", "/sim/success", self._on_success,
                                          reliable.with_depth(1000))
        if options.reset == "joints":
            self.teleop_pub = self.node.create_publisher("std_msgs/msg/Float64MultiArray", "/teleop/command", reliable)
            self.node.create_subscription("sensor_msgs/msg/JointState", "/joint_states", self._on_joints,
                                          ros.qos.SENSOR_DATA)

    # ---- inputs

    def _on_recorder(self, message: Any) -> None:
        status = _json(message.data)
        if status is not None:
            self.recorder_status = status

    def _on_policy(self, message: Any) -> None:
        status = _json(message.data)
        if status is not None:
            self.policy_status = status

    def _on_clock(self, message: Any) -> None:
        self.clocks.append(message.clock.sec * 1_000_000_000 + message.clock.nanosec)
        self.last_arrival = time.monotonic()

    def _on_success(self, message: Any) -> None:
        self.successes.append(bool(message.data))
        self.last_arrival = time.monotonic()

    def _on_joints(self, message: Any) -> None:
        self.joint_position = np.asarray(message.position, np.float64)

    # ---- spinning

    def spin(self, timeout_s: float = 0.0) -> None:
        """Handle what has arrived (waiting up to timeout_s for the first message); KeyboardInterrupt on Ctrl-C."""
        if not self.ros.ok():
            raise KeyboardInterrupt
        self.ros.spin_once(self.node, timeout_s)

    def spin_until(self, done: Callable[[], bool], timeout_s: float, failure: Callable[[], str]) -> None:
        """Spin until done(); RosError(failure()) after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RosError(failure())
            self.spin(0.01)

    def wait_for_actor(self) -> None:
        """Hear the recorder and the policy node (and the sim stepping), and have them hear this node; RosError
        naming the first topic that stays silent within options.actor_timeout_s."""
        timeout = self.options.actor_timeout_s
        where = ("start the actor side (robot-stack launch robot_stack online.launch.yaml ...) on the same "
                 "ROS_DOMAIN_ID and discovery settings as this learner")
        # (heard yet?, what is missing): in the order a launch brings them up
        checks: list[tuple[Callable[[], bool], str]] = [
            (lambda: self.policy_status is not None, "no policy node heard on /policy/status"),
            (lambda: self.load_pub.get_subscription_count() > 0, "no policy node listens on /policy/load"),
            (lambda: self.recorder_status is not None, "no recorder heard on /recorder/status"),
            (lambda: self.control_pub.get_subscription_count() > 0, "no recorder listens on /recorder/control"),
        ]
        if self.options.reset == "sim":
            checks += [
                (lambda: len(self.clocks) >= 3 and len(self.successes) >= 3,
                 "no sim heard on /clock and /sim/success (a real robot: --reset operator or joints)"),
                (lambda: self.reset_pub.get_subscription_count() > 0, "no sim listens on /sim/reset"),
            ]
        if self.options.reset == "joints":
            checks.append((lambda: self.joint_position is not None, "no robot heard on /joint_states"))
        deadline = time.monotonic() + timeout
        for done, missing in checks:
            self.spin_until(done, max(deadline - time.monotonic(), 0.0),
                            lambda missing=missing: f"{missing} within {timeout:g} s: {where}")

    # ---- outputs

    def control(self, word: str) -> None:
        self.control_pub.publish(self.ros.message_class("std_msgs/msg/String")(data=word))

    def rate_hz(self) -> float:
        """The control rate the policy node runs at [Hz] (its card's)."""
        return float((self.policy_status or {}).get("rate_hz") or 20.0)

    def recorder_count(self, name: str) -> int:
        """committed_this_run or failed_this_run of the recorder (0 before its first status)."""
        return int((self.recorder_status or {}).get(name) or 0)

    def close(self) -> None:
        self.node.destroy_node()


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class EpisodeOutcome:
    """An episode the recorder has committed: the word that ended it and the control steps the learner counted."""

    word: str  # success | fail | stop | operator (the operator's own success/fail/stop)
    steps: int  # control steps the learner counted


class EpisodeDriver:
    """Runs one episode at a time: reset, `start` on /recorder/control, then `success` at the sim's success or
    `fail` (sim) / `stop` (robot, outcome unknown) after the horizon, and waits for the recorder's commit.

    ``poll()`` advances it without blocking and returns an EpisodeOutcome when an episode is over. The next episode
    starts with ``begin()``. On sim time the reset is seen as a repeated /clock value; the k-th /clock and the
    (k - offset)-th /sim/success describe the same state (the sim publishes both per state), offset fixed at a quiet
    moment as robot-stack eval does.
    """

    def __init__(self, link: ActorLink, horizon: int, log: Callable[[str], None]) -> None:
        self.link, self.horizon, self.log = link, horizon, log
        self.options = link.options
        self.state = "idle"
        self.deadline = 0.0
        self.offset: int | None = None
        self.mark = 0  # sim: the clock index of the reset state; robot: the monotonic time the episode started
        self.baseline: tuple[int, int] = (0, 0)  # the recorder's (committed, failed) when this episode began
        self.word = ""
        self.steps = 0
        self.next_command = 0.0  # joints reset: when the target is sent next (monotonic s)

    @property
    def busy(self) -> bool:
        return self.state != "idle"

    @property
    def urgent(self) -> bool:
        """Resetting or ending an episode: the learner should look at the topics again at once."""
        return self.state in ("resetting", "committing")

    def recover_orphan(self) -> None:
        """A recorder still recording when the learner starts (its last learner was killed mid-episode): `stop`
        commits those frames (outcome unknown) so that nothing recorded is lost; waits for the commit."""
        link = self.link
        if not (link.recorder_status or {}).get("recording"):
            return
        committed = link.recorder_count("committed_this_run")
        self.log("the recorder was still recording an episode a stopped learner had begun: committing it (outcome "
                 "unknown)")
        link.control("stop")
        link.spin_until(lambda: link.recorder_count("committed_this_run") > committed
                        or not (link.recorder_status or {}).get("recording"), self.options.actor_timeout_s,
                        lambda: "the recorder did not commit the episode in progress: see its log (/recorder/status)")

    def begin(self) -> None:
        """Start the next episode (reset first)."""
        link = self.link
        self.baseline = (link.recorder_count("committed_this_run"), link.recorder_count("failed_this_run"))
        self.word, self.steps = "", 0
        if self.options.reset == "sim":
            self._settle_offset()
            self.mark = len(link.clocks)
            link.reset_pub.publish(link.ros.message_class("std_msgs/msg/Int64")(data=-1))  # the sim's next seed
            self._enter("resetting", self.options.actor_timeout_s)
        elif self.options.reset == "joints":
            self.mark = 0
            link.joint_position = None  # only joint states heard after the reset began count
            self._enter("resetting", self.options.reset_timeout_s)
        else:
            self.log("reset the robot, then start the episode (the teleop's start, or `robot-stack topic pub --once "
                     "/recorder/control std_msgs/msg/String '{data: start}'`)")
            self._enter("waiting_for_operator", float("inf"))

    def _settle_offset(self) -> None:
        if self.offset is None:
            link = self.link
            link.spin_until(lambda: time.monotonic() - link.last_arrival > QUIET_S, self.options.actor_timeout_s,
                            lambda: "the sim never paused between two states on /clock: is another sim running on "
                                    "this domain?")
            self.offset = len(link.clocks) - len(link.successes)

    def _enter(self, state: str, timeout_s: float) -> None:
        self.state = state
        self.deadline = time.monotonic() + timeout_s

    def poll(self) -> EpisodeOutcome | None:
        link = self.link
        if self.state == "idle":
            return None
        self._check_failed_start()
        if self.state == "resetting":
            if self._reset_done():
                self._start()
            elif time.monotonic() > self.deadline:
                raise RosError(self._reset_failure())
        elif self.state == "waiting_for_operator":
            if (link.recorder_status or {}).get("recording"):
                self.mark = time.monotonic()
                self._enter("running", float("inf"))
        elif self.state == "running":
            if link.recorder_count("committed_this_run") > self.baseline[0]:  # the operator ended it
                self.word = "operator"
                return self._done()
            word = self._end_word()
            if word:
                self.word = word
                link.control(word)
                self._enter("committing", self.options.actor_timeout_s)
        elif self.state == "committing":
            if link.recorder_count("committed_this_run") > self.baseline[0]:
                return self._done()
            if time.monotonic() > self.deadline:
                raise RosError(f"the recorder did not commit the episode within {self.options.actor_timeout_s:g} s of "
                               f"{self.word!r}: is it still running? (robot-stack topic echo /recorder/status)")
        return None

    def _done(self) -> EpisodeOutcome:
        self.state = "idle"
        return EpisodeOutcome(self.word, self.steps)

    def _check_failed_start(self) -> None:
        link = self.link
        if link.recorder_count("failed_this_run") > self.baseline[1]:
            error = (link.recorder_status or {}).get("error") or "see its log"
            raise RosError(f"the recorder could not record the episode: {error}")

    def _start(self) -> None:
        self.link.control("start")
        if self.options.reset != "sim":  # sim: steps count from the reset's state (mark)
            self.mark = time.monotonic()
        self._enter("running", float("inf"))

    def _reset_done(self) -> bool:
        link = self.link
        if self.options.reset == "sim":
            for k in range(max(self.mark, 1), len(link.clocks)):
                if link.clocks[k] <= link.clocks[k - 1]:  # a reset repeats the clock; a step advances it
                    self.mark = k
                    return True
            return False
        target = np.asarray(self.options.reset_joints)
        if time.monotonic() >= self.next_command:  # the target as a command, at the control rate
            link.teleop_pub.publish(link.ros.message_class("std_msgs/msg/Float64MultiArray")(data=target))
            self.next_command = time.monotonic() + 1.0 / link.rate_hz()
        position = link.joint_position
        if position is None or position.shape != target.shape:
            return False
        return bool(np.max(np.abs(position - target)) <= self.options.reset_tolerance)

    def _reset_failure(self) -> str:
        if self.options.reset == "sim":
            return (f"the sim did not reset within {self.options.actor_timeout_s:g} s of /sim/reset: is the sim robot "
                    "still running?")
        position = self.link.joint_position
        target = np.asarray(self.options.reset_joints)
        if position is None or position.shape != target.shape:
            return (f"--reset-joints has {len(target)} joints but /joint_states has "
                    f"{'none' if position is None else len(position)}: give one position per joint")
        return (f"the robot did not reach the reset position within {self.options.reset_timeout_s:g} s (off by up to "
                f"{np.max(np.abs(position - target)):.3f} rad, tolerance {self.options.reset_tolerance:g}): check the "
                "robot, or use --reset operator")

    def remaining_s(self) -> float:
        """Seconds until the running episode reaches its horizon (inf when no episode runs)."""
        if self.state != "running":
            return float("inf")
        self._end_word()  # brings self.steps up to date
        return max(0, self.horizon - self.steps) / self.link.rate_hz()

    def _end_word(self) -> str:
        """success / fail (sim) or stop (robot) once the episode is over, else ""."""
        link = self.link
        if self.options.reset == "sim":
            start = self.mark
            known = min(len(link.clocks), len(link.successes) + self.offset)  # states whose success has arrived
            self.steps = max(0, len(link.clocks) - 1 - start)
            if any(link.successes[k - self.offset] for k in range(start, known) if k - self.offset >= 0):
                return "success"
            return "fail" if self.steps >= self.horizon else ""
        self.steps = int((time.monotonic() - self.mark) * link.rate_hz())
        return "stop" if self.steps >= self.horizon else ""


# ------------------------------------------------------------------------------------------------ models


class ModelPusher:
    """Sends a model's .onnx bytes on /policy/load and reads the policy node's answer from /policy/status' last_load:
    loaded with this model's hash (accepted), refused (its reason), or no answer within the timeout."""

    def __init__(self, link: ActorLink, log: Callable[[str], None], timeout_s: float) -> None:
        self.link, self.log, self.timeout_s = link, log, timeout_s
        self.pending: dict[str, Any] | None = None
        self.counts = {"pushed": 0, "accepted": 0, "refused": 0, "unanswered": 0}

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def push(self, model_bytes: bytes, sha256: str, name: str) -> None:
        """Send a model; its answer comes through poll(). One at a time: the policy node refuses a model sent
        while it still checks the one before."""
        link = self.link
        before = (link.policy_status or {}).get("last_load")
        link.load_pub.publish(link.ros.message_class("std_msgs/msg/UInt8MultiArray")(
            data=np.frombuffer(model_bytes, np.uint8)))
        self.pending = {"sha256": sha256, "name": name, "before": before, "deadline": time.monotonic() + self.timeout_s}
        self.counts["pushed"] += 1

    def poll(self) -> str | None:
        """"accepted", "refused", "unanswered" once the pending model's answer is known, else None."""
        if self.pending is None:
            return None
        last_load = (self.link.policy_status or {}).get("last_load")
        pending = self.pending
        if last_load and last_load != pending["before"]:
            if last_load.get("result") == "loaded" and last_load.get("onnx_sha256") == pending["sha256"]:
                return self._answer("accepted", f"the policy node runs model {pending['name']} "
                                                f"({pending['sha256'][:12]})")
            if last_load.get("result") == "refused":
                return self._answer("refused", f"WARNING: the policy node refused model {pending['name']}: "
                                               f"{last_load.get('reason')}; it keeps running the model before")
        if time.monotonic() > pending["deadline"]:
            return self._answer("unanswered", f"WARNING: the policy node did not answer for model {pending['name']} "
                                              f"within {self.timeout_s:g} s (robot-stack topic echo /policy/status)")
        return None

    def _answer(self, result: str, text: str) -> str:
        self.counts[result] += 1
        self.pending = None
        self.log(text)
        return result
