"""lift: robosuite's Lift, a Panda picks a cube off a table under end-effector delta control.

The command (7,) is (dx, dy, dz, droll, dpitch, dyaw, gripper) in [-1, 1], robosuite's
operational-space controller (OSC_POSE, delta input, robot base frame = world axes here):

- dx, dy, dz: 1.0 sets the end-effector position target 0.05 m from where the end effector
  *is* at the start of the control step (robosuite's "achieved" goal mode), so the target
  never runs ahead. Measured at 20 Hz: from rest the arm covers about 0.006 m in the first
  step and settles at about 0.012 m a step (0.25 m/s) under a sustained 1.0.
- droll, dpitch, dyaw: an axis-angle rotation about the world x, y, z axes; 1.0 sets the
  orientation target 0.5 rad away, and a sustained 1.0 turns about 0.05 rad a step.
- gripper: robosuite's Panda gripper integrates the *sign*: > 0 moves the finger target a
  tenth of the way from open to closed per step (open to closed in 10 steps), < 0 toward open,
  0 leaves it where it is.

Holding still (``command_spec.hold_after``, what the driver's watchdog and e-stop send) is
zero motion with the last gripper command kept (``sticky``): the position and orientation
targets are re-set to the current pose every step, so the arm coasts to a stop (about 0.02 m
from full speed), and a closed gripper stays closed, so a held cube is not dropped. (A gripper
0 would also keep the finger target, but under action noise its sign would random-walk the
fingers; a kept +1 stays +1.)

What each part of a dynamics variant does here:

- ``actuator_gain``: scales the gear of all actuators: the arm's torque motors deliver less
  (or more) torque than OSC asks for; the finger position servos' gain and set point change.
- ``object_mass_scale``: mass and inertia of the cube. ``friction_scale``: sliding friction of
  every geom (fingers on the cube, cube on the table). ``gravity``: the world's gravity; OSC
  compensates the arm's own weight with the model's value.
- ``action_delay`` / ``action_noise``: CommandChannel, in control steps / command units, before
  robosuite sees the command (noise on the gripper element acts through its sign).
- ``observation_noise``: added to joint positions [rad] and velocities [rad/s], to the positions
  [m] of ``eef_pose`` and ``object_pose``, and as a random rotation vector [rad] to their orientations.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import mujoco
import numpy as np

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import NominalModel, apply_to_model
from robot_stack.sim.experts import ScriptedExpert
from robot_stack.sim.task import CommandSpec, SimTask, TaskConfig

PHYSICS_HZ = 500  # robosuite's fixed 2 ms physics step; a control step is a whole number of them
POSITION_STEP_M = 0.05  # OSC position target offset of a command element 1.0 [m]
ROTATION_STEP_RAD = 0.5  # OSC orientation target offset of a command element 1.0 [rad]
LIFT_MARGIN_M = 0.04  # robosuite's success: cube centre this far above the table top [m]

_ROBOSUITE_LOGGER = "robosuite_logs"


def _only_errors(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _import_robosuite() -> Any:
    """robosuite, imported with its logger limited to errors.

    On import robosuite warns about a missing private macro file and optional packages
    (robosuite_models, mink), and on every make about controller parts a Panda does not have;
    every node that builds the task would print them. A filter on its logger, installed before
    the import, drops those and keeps its errors (robosuite sets the logger's level itself).
    """
    logger = logging.getLogger(_ROBOSUITE_LOGGER)
    if _only_errors not in logger.filters:
        logger.addFilter(_only_errors)
    os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
    import robosuite
    import robosuite.controllers

    return robosuite


class _GlobalNumpySeed:
    """Seed numpy's global generator for a block and put the caller's state back afterwards.

    robosuite 1.5 draws the cube's size (when the scene is built), its placement and the
    arm's start-pose noise (on reset) from ``np.random``, not from a generator it is given.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._saved = np.random.get_state()
        np.random.seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        np.random.set_state(self._saved)


class LiftTask(SimTask):
    """robosuite Lift with a Panda: 9 joints (7 arm, 2 fingers), a 0.04 m cube, 200 steps at 20 Hz.

    ``joint_names`` follow franka_ros, and so do the finger values: each finger's opening in
    meters, >= 0 (robosuite's second finger joint runs negative; it is reported negated).
    ``eef_pose`` is robosuite's grip site between the fingertips, position and orientation of the
    same site (robosuite's own ``eef_quat`` is a different body's). ``env`` is the robosuite env.
    """

    name = "lift"
    default_horizon = 200  # 10 s at 20 Hz; the expert needs about 45 steps
    command_spec = CommandSpec(
        meaning="eef_delta_pose_gripper",
        names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
        low=(-1.0,) * 7,
        high=(1.0,) * 7,
        hold=(0.0,) * 7,
        sticky=(6,),
    )
    joint_names = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1", "panda_finger_joint2")

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        substeps = PHYSICS_HZ / config.control_hz if config.control_hz > 0 else 0.0
        if substeps < 1 or abs(substeps - round(substeps)) > 1e-6:
            raise SimError(f"lift cannot run at control_hz={config.control_hz:g}: its physics steps are 2 ms, "
                           f"so pick a rate that divides {PHYSICS_HZ} (e.g. 10, 20, 25, 50, 100)")
        robosuite = _import_robosuite()
        controller = robosuite.controllers.load_composite_controller_config(controller="BASIC", robot="Panda")
        # Seed 0: every instance (a gym env, the driver node) gets the same cube size.
        with _GlobalNumpySeed(0):
            # The task counts its own steps (horizon, ignore_done); hard_reset=False keeps one MjModel for
            # the task's life, so a reset costs 2 ms instead of a rebuild and the variant stays applied.
            # Images are rendered in observe() from the current state: robosuite samples its observables
            # at the first physics substep of a control step, one step stale, so none of them is used.
            self.env = robosuite.make(
                "Lift", robots="Panda", controller_configs=controller, control_freq=config.control_hz,
                horizon=2**62, ignore_done=True, hard_reset=False, reward_shaping=True,
                has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, renderer="mujoco",
            )
        self.model: mujoco.MjModel = self.env.sim.model._model  # robosuite's MjSim wraps the raw model and data
        self.data: mujoco.MjData = self.env.sim.data._data
        cameras = [self.model.camera(i).name for i in range(self.model.ncam)]
        unknown = [c.name for c in config.cameras if c.name not in cameras]
        if unknown:
            self.env.close()
            raise SimError(f"lift has no camera {unknown[0]!r}; cameras: {', '.join(cameras)}")
        for name in list(self.env.observation_names):
            self.env.modify_observable(name, "enabled", False)  # not read (see above); saves ~7 % a step

        robot = self.env.robots[0]
        self._robot = robot
        self._gripper = robot.gripper["right"]
        self._qpos_index = np.r_[robot._ref_joint_pos_indexes, robot._ref_gripper_joint_pos_indexes["right"]]
        self._qvel_index = np.r_[robot._ref_joint_vel_indexes, robot._ref_gripper_joint_vel_indexes["right"]]
        self._joint_sign = np.r_[np.ones(8), -1.0]
        self._eef_site = robot.eef_site_id["right"]
        self._cube_body = self.env.cube_body_id
        self._table_top_z = float(self.env.model.mujoco_arena.table_offset[2])
        self._nominal = NominalModel.capture(self.model, object_bodies=[self._cube_body])

        self._start_runtime()

    def _arm_controller(self) -> Any:
        return self._robot.composite_controller.part_controllers["right"]  # rebuilt by every reset

    def _make_renderers(self) -> list[tuple[str, mujoco.Renderer]]:
        # MuJoCo's own renderer: its images come right side up (robosuite's read OpenGL's bottom row first).
        cameras = self.config.cameras
        if not cameras:
            return []
        visual = self.model.vis.global_
        visual.offwidth = max(visual.offwidth, *(c.width for c in cameras))
        visual.offheight = max(visual.offheight, *(c.height for c in cameras))
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[0] = 0  # robosuite's collision geoms: hidden, as in its own renders
        return [(c.name, mujoco.Renderer(self.model, c.height, c.width)) for c in cameras]

    # -- episode
    def reset(self, seed: int | None = None) -> None:
        """New episode: cube placement and yaw, and the arm's start-pose noise, drawn from ``seed``."""
        if seed is None:
            seed = int(self._seeds.integers(2**63))
        placement, action_noise, observation_noise = np.random.default_rng(seed).spawn(3)
        # Before robosuite's reset: its new controllers cache the mass matrix of the model as it is then.
        apply_to_model(self.model, self._nominal, self.config.dynamics)
        self.channel.dynamics = self.config.dynamics
        with _GlobalNumpySeed(int(placement.integers(2**32))):
            self.env.reset()  # mj_resetData, robosuite places the cube and the arm, mj_forward
        if self.env.sim.model._model is not self.model:
            raise RuntimeError("robosuite rebuilt the Lift model on reset (hard_reset): the variant is not applied")
        self.channel.rng = action_noise
        self.channel.reset(self.command_spec.hold_after(None))
        self._observation_rng = observation_noise
        self._steps = 0

    def step(self, command: np.ndarray) -> None:
        """Advance one control step; ``command`` (7,) is validated again here (SimError if not 7 values)."""
        command = self.command_spec.validate(command)
        applied = np.clip(self.channel(command), self._low, self._high)
        self.env.step(applied)
        # mj_step2 leaves poses and contacts of the last substep's start: bring them to the new state.
        mujoco.mj_forward(self.model, self.data)
        self._steps += 1

    # -- what the robot reports
    def observe(self) -> dict[str, np.ndarray]:
        data = self.data
        site_quat = np.empty(4)
        mujoco.mju_mat2Quat(site_quat, data.site_xmat[self._eef_site])
        cube_quat = data.xquat[self._cube_body]
        observation = {
            "joint_position": data.qpos[self._qpos_index] * self._joint_sign,
            "joint_velocity": data.qvel[self._qvel_index] * self._joint_sign,
            # MuJoCo's quaternions are w x y z; ours are x y z w.
            "eef_pose": np.concatenate([data.site_xpos[self._eef_site], site_quat[1:], site_quat[:1]]),
            "object_pose": np.concatenate([data.xpos[self._cube_body], cube_quat[1:], cube_quat[:1]]),
        }
        noise = self.config.dynamics.observation_noise
        if noise:
            rng = self._observation_rng
            observation["joint_position"] += rng.normal(0.0, noise, 9)
            observation["joint_velocity"] += rng.normal(0.0, noise, 9)
            for key in ("eef_pose", "object_pose"):
                _perturb_pose(observation[key], rng.normal(0.0, noise, 6))
        for camera, renderer in self._renderers:
            renderer.update_scene(data, camera=camera, scene_option=self._scene_option)
            observation[f"image/{camera}"] = renderer.render()
        return observation

    def reward(self) -> float:
        """robosuite's shaped Lift reward in [0, 1]: reaching (<= 0.44) + grasping (0.11); 1.0 when lifted."""
        return float(self.env.reward())

    def success(self) -> bool:
        """The cube's centre is more than 0.04 m above the table top (robosuite's check)."""
        return bool(self.data.xpos[self._cube_body][2] > self._table_top_z + LIFT_MARGIN_M)

    # -- state
    def get_state(self) -> np.ndarray:
        """MuJoCo's integration state (time, qpos, qvel, warm start, ctrl, ...), then robosuite's
        controller state that outlives a step: the gripper's finger target (2,) and OSC's
        null-space joint target (7,, the episode's start pose)."""
        mujoco.mj_getState(self.model, self.data, self._physics_state, self._state_spec)
        return np.concatenate([self._physics_state, self._gripper.current_action,
                               self._arm_controller().initial_joint])

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=float).reshape(-1)
        n = self._physics_state.size
        if state.size != n + 9:
            raise SimError(f"lift state has {n + 9} values, got {state.size}: pass what get_state returned")
        mujoco.mj_setState(self.model, self.data, state[:n], self._state_spec)
        self._gripper.current_action = state[n:n + 2].copy()
        self._arm_controller().initial_joint = state[n + 2:].copy()
        mujoco.mj_forward(self.model, self.data)
        # Controllers cache Jacobians and the mass matrix until their next run: make them read this state.
        for controller in self._robot.composite_controller.part_controllers.values():
            controller.new_update = True

    def close(self) -> None:
        for _, renderer in self._renderers:
            renderer.close()
        self._renderers = []
        self.env.close()


def _perturb_pose(pose: np.ndarray, noise: np.ndarray) -> None:
    """Add noise[:3] [m] to the position and rotate the xyzw quaternion by the rotation vector noise[3:] [rad]."""
    pose[:3] += noise[:3]
    quat = np.r_[pose[6], pose[3:6]]
    mujoco.mju_quatIntegrate(quat, noise[3:], 1.0)
    pose[3:6], pose[6] = quat[1:], quat[0]


def _rotation_matrix(quat_xyzw: np.ndarray) -> np.ndarray:
    matrix = np.empty(9)
    mujoco.mju_quat2Mat(matrix, np.r_[quat_xyzw[3], quat_xyzw[:3]])
    return matrix.reshape(3, 3)


def _rotation_vector(matrix: np.ndarray) -> np.ndarray:
    """The axis-angle vector [rad] of a rotation matrix."""
    quat, vector = np.empty(4), np.empty(3)
    mujoco.mju_mat2Quat(quat, matrix.reshape(-1))
    mujoco.mju_quat2Vel(vector, quat, 1.0)
    return vector


class LiftExpert(ScriptedExpert):
    """Above the cube, down, close, lift: a phase machine on the privileged cube pose.

    Position commands are proportional to the error to the phase's target, the gripper is
    kept pointing down with its fingers square to the cube's faces, and a cube that is no
    longer between the fingers while lifting sends the machine back to the start.
    """

    # medium: about half of the episodes succeed (benchmarks/expert_success.py, 50 seeds).
    medium_noise = 0.4
    medium_random_probability = 0.2
    position_gain = 10.0  # command units per m of error: half the error as the step's target offset
    rotation_gain = 1.0  # command units per rad of error: half the error
    above_m = 0.06  # approach height over the cube centre [m]
    grasp_depth_m = -0.01  # grip site target relative to the cube centre while descending [m]
    close_steps = 8  # closing the fingers from open onto the cube takes about 6 steps
    lift_m = 0.15  # lift target over the cube's height at the grasp [m]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self) -> None:
        self.phase, self.closed_steps, self.lift_z = "above", 0, 0.0

    def clean_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        eef, cube = observation["eef_pose"][:3], observation["object_pose"][:3]
        gripper = -1.0
        if self.phase == "above":
            target = cube + [0.0, 0.0, self.above_m]
            if np.linalg.norm(target - eef) < 0.01:
                self.phase = "down"
        elif self.phase == "down":
            target = cube + [0.0, 0.0, self.grasp_depth_m]
            if np.linalg.norm((target - eef)[:2]) < 0.01 and eef[2] - cube[2] < 0.005:
                self.phase = "close"
        elif self.phase == "close":
            target, gripper = eef.copy(), 1.0
            self.closed_steps += 1
            if self.closed_steps >= self.close_steps:
                self.phase, self.lift_z = "lift", cube[2] + self.lift_m
        else:
            # A fixed height, not one over the cube: the cube rises with the hand.
            target, gripper = np.array([cube[0], cube[1], self.lift_z]), 1.0
            if np.linalg.norm((cube - eef)[:2]) > 0.04 or eef[2] - cube[2] > 0.03:  # it slipped out: again
                self.reset()
        action = np.zeros(7)
        action[:3] = np.clip(self.position_gain * (target - eef), -1.0, 1.0)
        action[3:6] = np.clip(self.rotation_gain * self._orientation_error(observation), -1.0, 1.0)
        action[6] = gripper
        return action

    @staticmethod
    def _orientation_error(observation: dict[str, np.ndarray]) -> np.ndarray:
        """Rotation vector [rad, world frame] from the gripper's orientation to pointing down with
        the fingers' closing axis along the cube face normal nearest to it."""
        current = _rotation_matrix(observation["eef_pose"][3:])
        cube = _rotation_matrix(observation["object_pose"][3:])
        face_yaw = math.atan2(cube[1, 0], cube[0, 0])
        finger_yaw = math.atan2(current[1, 0], current[0, 0])  # site x axis: the fingers' closing axis
        quarter = math.pi / 2
        yaw = face_yaw + quarter * round((finger_yaw - face_yaw) / quarter)
        x_axis = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        z_axis = np.array([0.0, 0.0, -1.0])
        target = np.column_stack([x_axis, np.cross(z_axis, x_axis), z_axis])
        return _rotation_vector(target @ current.T)
