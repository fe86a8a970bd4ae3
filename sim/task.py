"""What every simulated task provides, and the one table that names the tasks.

A task is a MuJoCo scene with a robot that takes a fixed-size command per
control step. Its ``observe()`` is THE mapping from sim state to observations:
the gymnasium env returns it as is and the sim robot driver node publishes it
on the ROS 2 topics, so the two cannot drift.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import CommandChannel, Dynamics, make_dynamics


@dataclass(frozen=True)
class CommandSpec:
    """What ``/robot/command`` means for a robot: written into datasets and model cards."""

    meaning: str  # e.g. "eef_delta_pose_gripper": dx, dy, dz [m scaled], droll, dpitch, dyaw [rad scaled], gripper
    names: tuple[str, ...]  # one per element
    low: tuple[float, ...]
    high: tuple[float, ...]
    hold: tuple[float, ...]  # the command that keeps the robot still (a watchdog or e-stop sends it)
    sticky: tuple[int, ...] = ()  # elements that keep their last commanded value while holding (a gripper's grasp)

    @property
    def dim(self) -> int:
        return len(self.names)

    def hold_after(self, last_command: np.ndarray | None) -> np.ndarray:
        """The hold command following ``last_command``: no motion, sticky elements unchanged."""
        hold = np.asarray(self.hold, dtype=float)
        if last_command is not None and self.sticky:
            hold[list(self.sticky)] = np.asarray(last_command, dtype=float)[list(self.sticky)]
        return hold

    def validate(self, command: Any) -> np.ndarray:
        """The command as a float array clipped to its bounds; SimError if its length is wrong."""
        array = np.asarray(command, dtype=float).reshape(-1)
        if array.size != self.dim:
            raise SimError(
                f"command has {array.size} values, this robot takes {self.dim} ({', '.join(self.names)})"
            )
        if not np.all(np.isfinite(array)):
            raise SimError("command has NaN or infinite values")
        return np.clip(array, self.low, self.high)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int = 84
    width: int = 84


@dataclass
class TaskConfig:
    """How to build a task: cameras, control rate, episode length, dynamics, seed."""

    cameras: tuple[CameraSpec, ...] = ()
    control_hz: float = 20.0
    horizon: int = 200  # control steps per episode
    dynamics: Dynamics = field(default_factory=Dynamics)
    seed: int | None = None


class SimTask(abc.ABC):
    """A simulated robot task. Units: meters, radians, seconds; quaternions are (x, y, z, w) as in ROS."""

    name: str = ""
    command_spec: CommandSpec  # a class attribute: teleop reads it without building the scene
    joint_names: tuple[str, ...]  # the joints published on /joint_states, in order

    def __init__(self, config: TaskConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; the object placement is drawn from ``seed`` (same seed, same placement)."""

    @abc.abstractmethod
    def step(self, command: np.ndarray) -> None:
        """Advance one control step (1 / control_hz seconds) with a validated command."""

    @abc.abstractmethod
    def observe(self) -> dict[str, np.ndarray]:
        """The observation of the current state.

        Keys: ``joint_position`` and ``joint_velocity`` (n_joints,) in joint_names order;
        ``eef_pose`` (7,) position xyz + quaternion xyzw in the world frame; ``object_pose`` (7,)
        likewise; ``image/<camera>`` (H, W, 3) uint8 for each configured camera. Float arrays are
        float64; observation noise of the dynamics variant is already applied.
        """

    @abc.abstractmethod
    def reward(self) -> float:
        """Dense ground-truth reward of the current state (evaluation only, never a training label)."""

    @abc.abstractmethod
    def success(self) -> bool:
        """Whether the task is solved in the current state."""

    @abc.abstractmethod
    def get_state(self) -> np.ndarray:
        """The full physical state as a flat array (for set_state)."""

    @abc.abstractmethod
    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from get_state (the dynamics variant and delay line are left as they are)."""

    def _start_runtime(self) -> None:
        """What every MuJoCo task sets up once its model exists: the physics-state buffer (get/set_state),
        the seed stream of reset(None), observation noise and command channel streams (reset reseeds them),
        command bounds, the step count and the camera renderers (the task's own _make_renderers)."""
        import mujoco

        self._state_spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self._physics_state = np.zeros(mujoco.mj_stateSize(self.model, self._state_spec))
        self._seeds = np.random.default_rng(self.config.seed)  # draws the seed of a reset(None)
        self._observation_rng = np.random.default_rng(0)
        self.channel = CommandChannel(self.config.dynamics, self.command_spec.dim, np.random.default_rng(0))
        self._low, self._high = np.asarray(self.command_spec.low), np.asarray(self.command_spec.high)
        self._steps = 0
        self._renderers = self._make_renderers()

    @property
    def steps(self) -> int:
        """Control steps since reset."""
        return getattr(self, "_steps", 0)

    @property
    def done(self) -> bool:
        """The episode ran out of time (horizon reached)."""
        return self.steps >= self.config.horizon

    def close(self) -> None:
        """Free renderers and other native resources."""


# Task name -> "module:Class"; registered here explicitly, imported on first use.
TASKS: dict[str, str] = {
    "lift": "robot_stack.sim.lift:LiftTask",
    "reach2d": "robot_stack.sim.planar:PlanarReachTask",
}


def _task_class(name: str) -> type[SimTask]:
    if name not in TASKS:
        raise SimError(f"unknown sim task {name!r}; tasks: {', '.join(TASKS)}")
    module_name, class_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def command_spec_of(name: str) -> CommandSpec:
    """A task's command spec without building the scene (what a teleop node needs)."""
    return _task_class(name).command_spec


def make_task(name: str, *, cameras: list | tuple = (), control_hz: float = 20.0, horizon: int | None = None,
              dynamics: str | Dynamics = "nominal", seed: int | None = None, **dynamics_overrides: Any) -> SimTask:
    """Build a task by name, e.g. ``make_task("lift", cameras=["agentview"], dynamics="real")``.

    Cameras are names or (name, height, width) or CameraSpec.
    """
    cls = _task_class(name)
    specs = tuple(_camera_spec(c) for c in cameras)
    config = TaskConfig(cameras=specs, control_hz=float(control_hz),
                        dynamics=make_dynamics(dynamics, **dynamics_overrides), seed=seed)
    if horizon is not None:
        config.horizon = int(horizon)
    else:
        config.horizon = cls.default_horizon if hasattr(cls, "default_horizon") else config.horizon
    return cls(config)


def _camera_spec(camera: Any) -> CameraSpec:
    if isinstance(camera, CameraSpec):
        return camera
    if isinstance(camera, str):
        name, _, size = camera.partition(":")
        if size:
            height, _, width = size.partition("x")
            return CameraSpec(name, int(height), int(width or height))
        return CameraSpec(name)
    if isinstance(camera, (list, tuple)) and len(camera) == 3:
        return CameraSpec(str(camera[0]), int(camera[1]), int(camera[2]))
    raise SimError(f"camera {camera!r}: give a name, 'name:HxW', or (name, height, width)")
