"""The policy node's logic (nodes/policy.py is its ROS glue), readable and testable without DDS.

Per control tick (``tick``, at the card's rate): take the newest message of every input feature, as the
recorder samples on the wall clock (each feature's value is read from its message by the recorder's own
``FeatureSource.value``: the same topics, fields and joint order that made the training data); if any is
older than its max age (or never came), or the e-stop is latched, publish the hold command; else run the
model and publish its command through the safety filter. The alignment rule is the card's: the latest
message per topic at each tick, ages measured from its arrival (time.monotonic_ns) at this node.

An operator's command (``/teleop/command``, ``on_teleop``) fresher than ``intervention_timeout_s`` replaces
the model's output for the tick, through the same safety filter: the human-in-the-loop correction of HIL-SERL
(Luo et al. 2024, "Precise and Dexterous Robotic Manipulation via Human-in-the-Loop Reinforcement Learning").
Each tick tells whether its command was the operator's (``publish_intervention``), so the recorder can flag
the frame; a held tick (stale observation, e-stop) is nobody's command and is not an intervention.

A new model offered on ``/policy/load`` is read, checked against the running card (check_swap), loaded
into onnxruntime and warmed up by ``prepare`` (the node runs it off the control thread); ``install`` hands
it over and the swap happens at the start of the next tick, so no tick sees half of each model. A model that
fails is refused and the running one keeps control; ``status`` says which happened.

Times are ns on the monotonic clock unless a name says otherwise; latencies in the status are ms.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.deploy.card import ModelCard, check_robot, check_swap, load_model, raw_state
from robot_stack.deploy.safety import SafetyFilter, SafetyLimits
from robot_stack.errors import DeployError, RobotStackError
from robot_stack.record import FeatureBuffer, FeatureSource, RecorderConfig, load_config

WARMUP_RUNS = 20
LATENCY_WINDOW = 2000  # ticks the latency percentiles are taken over (the newest)
STALE_WARNING_S = 5.0  # a stale input is warned about at most this often


def load_policy(model: str | Path | bytes, *, device: str = "cpu", threads: int = 1,
                rate_hz: float | None = None) -> Any:
    """A model (a path, its card copy checked, or the bytes of an .onnx file) running in onnxruntime and warmed
    up: deploy.runtime.OnnxPolicy. DeployError when it is not a model with a card this version reads, the device
    cannot run it, or after the warm-up its inference p99 is over half the control period (1 / rate_hz, the card's
    rate by default): a policy that cannot keep its rate, with time left for the rest of the tick, must not
    take control."""
    from robot_stack.deploy.runtime import OnnxPolicy

    policy = OnnxPolicy(model, device=device, threads=threads)
    policy.warmup(WARMUP_RUNS, budget_ms=0.5e3 / (rate_hz or policy.card.rate_hz))
    return policy


def robot_features(card: ModelCard, features_file: str | Path,
                   command_spec_of: Callable[[str], Any] | None = None) -> RecorderConfig:
    """The robot's features file (the recorder's, read by record.load_config), with a camera feature
    image.<cam> added for each image the model sees, as the recorder's cameras parameter adds them."""
    cameras = ",".join(f"{name[len('image.'):]}:{shape[0]}x{shape[1]}" for name, shape in card.spec.images.items())
    return load_config(features_file, cameras=cameras, command_spec_of=command_spec_of)


def check_fits(card: ModelCard, config: RecorderConfig, control_hz: float | None = None) -> None:
    """DeployError (one line naming every mismatch) when the model does not fit the robot the features file
    describes: command meaning, size, bounds, observation features and their shapes, and the control rate
    (control_hz: the robot's; None: not checked)."""
    robot = dict(config.robot)
    if control_hz:
        robot["rate_hz"] = float(control_hz)
    check_robot(card, robot, {feature.name: feature for feature in config.features})


class PolicyController:
    """Observation cache, staleness, e-stop latch, hold, model swap, counters and latency figures.

    publish(command float64 [A]) is called once per tick with what goes to /robot/command, then
    publish_intervention(bool) with whether that command was the operator's; log has
    info/warning/error(text, **options) (a node logger: throttle_duration_sec is honoured where it is).
    eef_source: the feature whose first three values are the end effector's position [m], for the
    safety filter's workspace box (None: no box). intervention_timeout_s: how long an operator's command
    stays in force [s] (None: two control periods).
    """

    def __init__(self, policy: Any, config: RecorderConfig, safety: SafetyLimits, *,
                 publish: Callable[[np.ndarray], None], log: Any, device: str = "cpu", threads: int = 1,
                 eef_source: FeatureSource | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 publish_intervention: Callable[[bool], None] = lambda operator: None,
                 intervention_timeout_s: float | None = None) -> None:
        self.policy = policy
        self.card: ModelCard = policy.card
        self.publish = publish
        self.publish_intervention = publish_intervention
        self.log = log
        self.device, self.threads = device, threads
        self.clock = clock
        self.period_ns = 1e9 / self.card.rate_hz
        if intervention_timeout_s is not None and not intervention_timeout_s > 0:
            raise DeployError(f"intervention_timeout_s must be a positive number of seconds, got {intervention_timeout_s}")
        self.intervention_timeout_ns = 2 * self.period_ns if intervention_timeout_s is None else intervention_timeout_s * 1e9
        self.teleop: tuple[int, np.ndarray] | None = None  # the operator's latest command: (arrival [ns], command)
        self.intervening = False  # the last tick's command was the operator's
        self.safety = SafetyFilter(safety)
        by_name = {feature.name: feature for feature in config.features}
        card_features = self.card.data["observation"].get("features") or {}
        self.inputs: list[FeatureSource] = []
        self.max_age_ns: dict[str, float] = {}
        for name in [*self.card.spec.state, *self.card.spec.images]:
            if name not in by_name:
                raise DeployError(f"the features file does not say where observation {name!r} comes from: give the "
                                  "features file the model was recorded with (features:=PATH)")
            described = card_features.get(name) or {}
            # The card's topic when it names one (launch remaps move it), else the features file's.
            source = by_name[name]
            if described.get("topic"):
                source = dataclasses.replace(source, topic=str(described["topic"]))
            self.inputs.append(source)
            self.max_age_ns[name] = 1e9 * float(described.get("max_age_s") or self.card.max_age_s)
        # The end effector read for the workspace box is the input of that name where the model sees it.
        self.eef_source = next((f for f in self.inputs if eef_source and f.name == eef_source.name), eef_source)
        watched = [*self.inputs, *([self.eef_source] if self.eef_source not in (None, *self.inputs) else [])]
        self.by_topic: dict[str, list[FeatureSource]] = {}
        for feature in watched:
            if feature not in self.by_topic.get(feature.topic, []):
                self.by_topic.setdefault(feature.topic, []).append(feature)
        self.buffers = {feature.name: FeatureBuffer(1) for feature in watched}
        self.expected_shapes = {name: tuple(shape) for name, shape in {**self.card.spec.state,
                                                                        **self.card.spec.images}.items()}
        self.estop_engaged = False  # /estop's last value
        self.estop_latched = False  # holds until /policy/reset, even after /estop went false
        self.holding_for: str | None = None  # why the last tick held ("estop", "stale"), None: the model ran
        self.counts = {"steps": 0, "held": 0, "stale": 0, "clipped": 0, "rate_limited": 0, "workspace": 0,
                       "nonfinite": 0, "missed": 0, "bad_messages": 0, "swaps": 0, "refused_models": 0,
                       "interventions": 0, "bad_teleop": 0}
        self.control_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # tick start -> command published
        self.end_to_end_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # newest input's arrival -> published
        self.last_tick_ns: int | None = None
        self.last_load: dict[str, Any] | None = None
        self._pending: Any = None  # a model to swap in, or why one was refused
        self._pending_lock = threading.Lock()
        self.changed = True  # something an operator should see in the status happened since status() was read

    # ---- inputs

    def topics(self) -> dict[str, FeatureSource]:
        """Topic -> a feature read from it (its type and QoS are the topic's)."""
        return {topic: features[0] for topic, features in self.by_topic.items()}

    def on_message(self, topic: str, message: Any, now_ns: int | None = None) -> None:
        """A message on an observation topic; now_ns: its arrival (the clock's time by default)."""
        now_ns = self.clock() if now_ns is None else now_ns
        for feature in self.by_topic.get(topic, ()):
            try:
                value = feature.value(message)
                expected = self.expected_shapes.get(feature.name)
                if expected is not None and value.shape != expected:
                    raise DeployError(f"shape {value.shape}, the model needs {expected}")
            except (RobotStackError, AttributeError, ValueError) as error:
                self.counts["bad_messages"] += 1
                self.log.error(f"dropped a message on {topic} for {feature.name}: {error}", throttle_duration_sec=5.0)
                continue
            self.buffers[feature.name].add(now_ns, value)

    def on_teleop(self, command: Any, now_ns: int | None = None) -> None:
        """An operator's command (float [A], the robot's command units): it replaces the model's output while
        fresher than the intervention timeout. A command of the wrong length is dropped with a logged error."""
        command = np.asarray(command, np.float64).reshape(-1)
        size = len(self.card.command["low"])
        if len(command) != size:
            self.counts["bad_teleop"] += 1
            names = ", ".join(self.card.command.get("names") or [])
            self.log.error(f"ignored a command on /teleop/command: it has {len(command)} values, this robot's command "
                           f"has {size} ({names}): start the teleop with command_dim:={size}", throttle_duration_sec=5.0)
            return
        self.teleop = (self.clock() if now_ns is None else now_ns, command)

    def on_estop(self, engaged: bool) -> None:
        """/estop: true latches the hold until on_reset; false only allows that reset."""
        engaged = bool(engaged)
        if engaged and not self.estop_latched:
            self.log.warning("e-stop: holding until /policy/reset (send true there once the robot is safe)")
        elif not engaged and self.estop_engaged:
            self.log.info("e-stop released; still holding: send true on /policy/reset to give the model control")
        self.estop_latched = self.estop_latched or engaged
        self.estop_engaged = engaged
        self.changed = True

    def on_reset(self) -> bool:
        """/policy/reset true: clears the e-stop latch, unless /estop is still true. True when cleared."""
        if self.estop_engaged:
            self.log.warning("reset refused: /estop is still true (release it first)")
            return False
        if self.estop_latched:
            self.log.info("e-stop reset: the model has control again")
        self.estop_latched = False
        self.changed = True
        return True

    # ---- models

    def prepare(self, model_bytes: bytes) -> Any:
        """Read, check and warm up a model sent to replace the running one (slow: call it off the control
        thread); an OnnxPolicy for install. DeployError says why it cannot replace the running one."""
        _, card = load_model(model_bytes)
        check_swap(self.card, card)
        return load_policy(model_bytes, device=self.device, threads=self.threads, rate_hz=self.card.rate_hz)

    def install(self, policy: Any) -> None:
        """Swap `policy` (from prepare) in at the start of the next tick (thread-safe)."""
        with self._pending_lock:
            self._pending = policy

    def refuse(self, reason: str) -> None:
        """A model offered on /policy/load cannot be used: the next tick says so; the running one keeps control
        (thread-safe)."""
        with self._pending_lock:
            self._pending = reason

    def _apply_load(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        self.changed = True
        if isinstance(pending, str):
            self.counts["refused_models"] += 1
            self.last_load = {"result": "refused", "reason": pending, "time": time.time()}
            self.log.error(f"refused the model sent on /policy/load: {pending}")
            return
        previous = self.policy
        self.policy, self.card = pending, pending.card
        self.counts["swaps"] += 1
        self.last_load = {"result": "loaded", "model": pending.card.name, "onnx_sha256": pending.sha256,
                          "replaced": previous.card.name, "time": time.time()}
        self.log.info(f"model {pending.card.name} ({pending.sha256[:12]}) replaced {previous.card.name}")

    # ---- the control step

    def tick(self, now_ns: int | None = None) -> np.ndarray:
        """One control step: publish the model's filtered command, or the hold command; returns what was sent."""
        started = time.perf_counter_ns()
        self._apply_load()
        now_ns = self.clock() if now_ns is None else now_ns
        if self.last_tick_ns is not None:
            self.counts["missed"] += max(0, round((now_ns - self.last_tick_ns) / self.period_ns) - 1)
        self.last_tick_ns = now_ns
        self.counts["steps"] += 1
        reason, newest_ns = self._hold_reason(now_ns)
        if reason is not None:
            # A stale observation or the e-stop holds the robot whoever commands it.
            command = self.safety.hold()
            self.counts["held"] += 1
            self.publish(command)
            self._set_intervening(False)
            self._set_holding(reason)
            return command
        operator = self.teleop is not None and now_ns - self.teleop[0] <= self.intervention_timeout_ns
        raw = self.teleop[1] if operator else self.policy(self._inputs())
        command, flags = self.safety(raw, self._eef_position())
        for flag in flags:
            self.counts[flag] += 1
        self.publish(command)
        self._set_intervening(operator)
        self.control_ms.append((time.perf_counter_ns() - started) / 1e6)
        self.end_to_end_ms.append((self.clock() - newest_ns) / 1e6)
        self._set_holding(None)
        return command

    def _set_intervening(self, operator: bool) -> None:
        self.publish_intervention(operator)
        self.counts["interventions"] += operator
        if operator != self.intervening:
            self.log.info("the operator's commands override the model" if operator else "the model has control again")
            self.intervening = operator
            self.changed = True

    def _hold_reason(self, now_ns: int) -> tuple[str | None, int]:
        """Why this tick must hold ("estop" or "stale"), and the newest input's arrival time."""
        if self.estop_latched:
            return "estop", 0
        newest = 0
        for feature in self.inputs:
            entry = self.buffers[feature.name].entries[-1] if self.buffers[feature.name].entries else None
            max_age_ns = self.max_age_ns[feature.name]
            if entry is None or now_ns - entry[0] > max_age_ns:
                self.counts["stale"] += 1
                if entry is None:
                    self.log.warning(f"no message yet on {feature.topic} (observation {feature.name}): publishing "
                                     "the hold command; is the robot driver running?",
                                     throttle_duration_sec=STALE_WARNING_S)
                else:
                    self.log.warning(f"observation {feature.name} on {feature.topic} is "
                                     f"{(now_ns - entry[0]) / 1e9:.2f} s old (max age {max_age_ns / 1e9:g} s): "
                                     "publishing the hold command", throttle_duration_sec=STALE_WARNING_S)
                return "stale", 0
            newest = max(newest, entry[0])
        return None, newest

    def _set_holding(self, reason: str | None) -> None:
        if reason == self.holding_for:
            return
        if reason is None and self.holding_for == "stale":
            self.log.info("observations are fresh again: the model has control")
        self.holding_for = reason
        self.changed = True

    def _inputs(self) -> dict[str, np.ndarray]:
        """The graph's inputs, batch of one: "state" float32 [1, S] (card.raw_state), "image.<cam>" uint8
        [1, H, W, 3]."""
        spec = self.card.spec
        values = {name: self.buffers[name].entries[-1][1] for name in [*spec.state, *spec.images]}
        inputs = {"state": raw_state(spec, {name: np.asarray(values[name])[None] for name in spec.state})}
        for name in spec.images:
            inputs[name] = np.ascontiguousarray(values[name], np.uint8)[None]
        return inputs

    def _eef_position(self) -> np.ndarray | None:
        if self.eef_source is None or not self.buffers[self.eef_source.name].entries:
            return None
        return np.asarray(self.buffers[self.eef_source.name].entries[-1][1], np.float64).reshape(-1)[:3]

    # ---- what /policy/status says

    def status(self) -> dict[str, Any]:
        """The status (JSON-able): model, state, counters (interventions: ticks whose command was the operator's;
        bad_teleop: operator commands ignored for their length), intervening (the last tick's command was the
        operator's), latency p50/p99 [ms], the last /policy/load's result."""
        self.changed = False
        state = "estop" if self.estop_latched else "holding" if self.holding_for else "running"
        return {
            "model": self.card.name,
            "onnx_sha256": self.policy.sha256,
            "state": state,
            "estop": self.estop_latched,
            "estop_engaged": self.estop_engaged,
            "intervening": self.intervening,
            "rate_hz": self.card.rate_hz,
            "device": self.device,
            **self.counts,
            "inference_ms": _inference_ms(self.policy.latency()),
            "control_ms": _percentiles(self.control_ms),
            "end_to_end_ms": _percentiles(self.end_to_end_ms),
            "warmup_ms": {key: _round(value) for key, value in (self.policy.warmup_figures or {}).items()},
            "last_load": self.last_load,
        }


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _inference_ms(latency: dict[str, Any]) -> dict[str, Any]:
    return {"p50": _round(latency["p50_ms"]), "p99": _round(latency["p99_ms"]), "n": latency["n"]}


def _percentiles(samples: deque[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"p50": None, "p99": None, "n": 0}
    p50, p99 = np.percentile(np.fromiter(samples, float), [50, 99])
    return {"p50": round(float(p50), 4), "p99": round(float(p99), 4), "n": len(samples)}


def parse_limit(text: str, name: str) -> float | list[float] | None:
    """A safety parameter given as text: "" (no limit), a number, or a YAML list of numbers (one per element)."""
    import yaml

    text = (text or "").strip()
    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    numbers = value if isinstance(value, list) else [value]
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise DeployError(f"parameter {name} is {text!r}: give a number or a list of numbers, e.g. [0.1, 0.1]")
    return [float(v) for v in value] if isinstance(value, list) else float(value)


def safety_limits(card: ModelCard, params: Mapping[str, Any]) -> SafetyLimits:
    """The safety filter's limits from the card's command and the node's max_step, max_step_change,
    workspace_low, workspace_high (texts, parse_limit) and eef_step_m (0: from the command meaning)."""
    return SafetyLimits.from_card(
        card,
        max_step=parse_limit(params.get("max_step", ""), "max_step"),
        max_step_change=parse_limit(params.get("max_step_change", ""), "max_step_change"),
        workspace_low=parse_limit(params.get("workspace_low", ""), "workspace_low"),
        workspace_high=parse_limit(params.get("workspace_high", ""), "workspace_high"),
        eef_step_m=float(params.get("eef_step_m") or 0.0) or None,
    )
