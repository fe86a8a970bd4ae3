"""``lift``: robosuite's Lift with a Panda under operational-space control (OSC) of end-effector deltas.

Command (7,): dx, dy, dz, droll, dpitch, dyaw, gripper in [-1, 1]. robosuite's OSC maps
±1 to ±0.05 m and ±0.5 rad of end-effector motion per control step; gripper -1 opens,
+1 closes (a finger position target). Holding still keeps the last gripper command, so a
watchdog or e-stop does not drop a grasped cube.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import CommandChannel, NominalModel, apply_to_model
from robot_stack.sim.experts import ScriptedExpert
from robot_stack.sim.task import CommandSpec, SimTask, TaskConfig

CAMERAS = ("agentview", "frontview", "birdview", "sideview", "robot0_eye_in_hand", "robot0_robotview")
_ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
_FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")


def _import_robosuite():
    # robosuite logs warnings at import and for every unused controller part; a driver's log needs none of them.
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    for handler in logging.getLogger("robosuite_logs").handlers:
        handler.setLevel(logging.ERROR)
    return robosuite, load_composite_controller_config


class LiftTask(SimTask):
    name = "lift"
    default_horizon = 200
    command_spec = CommandSpec(
        meaning="eef_delta_pose_gripper",
        names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
        low=(-1.0,) * 7,
        high=(1.0,) * 7,
        hold=(0.0,) * 7,
        sticky=(6,),
    )
    joint_names = _ARM_JOINTS + _FINGER_JOINTS

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        for camera in config.cameras:
            if camera.name not in CAMERAS:
                raise SimError(f"lift has no camera {camera.name!r}; cameras: {', '.join(CAMERAS)}")
        robosuite, load_controller = _import_robosuite()
        cameras = [c.name for c in config.cameras]
        # Building the scene draws the cube's size from numpy's global generator: fix it, so every
        # instance of the task (the env, the driver node) has the same cube.
        saved = np.random.get_state()
        np.random.seed(0)
        try:
            self.env = robosuite.make(
                "Lift", robots="Panda", controller_configs=load_controller(controller="BASIC", robot="Panda"),
                has_renderer=False, has_offscreen_renderer=bool(cameras), use_camera_obs=bool(cameras),
                camera_names=cameras or "agentview", camera_heights=[c.height for c in config.cameras] or 84,
                camera_widths=[c.width for c in config.cameras] or 84, control_freq=config.control_hz,
                horizon=10**9, ignore_done=True, hard_reset=False, reward_shaping=True,
            )
        finally:
            np.random.set_state(saved)
        self._model = self.env.sim.model._model
        cube_body = self._model.body("cube_main").id
        self._nominal = NominalModel.capture(self._model, [cube_body])
        self._rng = np.random.default_rng(config.seed)
        self.channel = CommandChannel(config.dynamics, self.command_spec.dim, np.random.default_rng(0))
        self._obs: dict | None = None
        self._steps = 0

    def reset(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int(self._rng.integers(2**31))
        apply_to_model(self._model, self._nominal, self.config.dynamics)
        self.channel.dynamics = self.config.dynamics
        # robosuite's placement sampler and joint noise draw from numpy's global generator.
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            # A soft reset keeps the solver's warm start and velocities of the last episode; clear them
            # so an episode depends on its seed only (the env and the driver node must agree exactly).
            self.env.sim.reset()
            self._obs = self.env.reset()
        finally:
            np.random.set_state(saved)
        self._noise = np.random.default_rng(seed + 1)
        self.channel.rng = np.random.default_rng(seed + 2)
        hold = np.asarray(self.command_spec.hold, dtype=float)
        hold[6] = -1.0  # the gripper starts open
        self.channel.reset(hold)
        self._steps = 0

    def step(self, command: np.ndarray) -> None:
        command = np.asarray(command, dtype=float).reshape(-1)
        if command.shape != (7,):
            raise SimError(f"lift takes a 7-D command ({', '.join(self.command_spec.names)}), got {command.size}")
        self._obs, _, _, _ = self.env.step(self.channel(command))
        self._steps += 1

    def _observations(self) -> dict:
        if self._obs is None:
            self._obs = self.env._get_observations(force_update=True)
        return self._obs

    def observe(self) -> dict[str, np.ndarray]:
        obs = self._observations()
        out = {
            "joint_position": np.concatenate([obs["robot0_joint_pos"], obs["robot0_gripper_qpos"]]),
            "joint_velocity": np.concatenate([obs["robot0_joint_vel"], obs["robot0_gripper_qvel"]]),
            "eef_pose": np.concatenate([obs["robot0_eef_pos"], obs["robot0_eef_quat"]]),  # robosuite quats are xyzw
            "object_pose": np.concatenate([obs["cube_pos"], obs["cube_quat"]]),
        }
        out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
        if self.config.dynamics.observation_noise:
            for key in out:
                out[key] = out[key] + self._noise.normal(0.0, self.config.dynamics.observation_noise, out[key].shape)
        for camera in self.config.cameras:
            # robosuite renders with OpenGL's origin at the bottom: flip so row 0 is the top.
            out[f"image/{camera.name}"] = np.ascontiguousarray(obs[f"{camera.name}_image"][::-1])
        return out

    def reward(self) -> float:
        return float(self.env.reward())

    def success(self) -> bool:
        return bool(self.env._check_success())

    def get_state(self) -> np.ndarray:
        return np.asarray(self.env.sim.get_state().flatten())

    def set_state(self, state: np.ndarray) -> None:
        self.env.sim.set_state_from_flattened(np.asarray(state))
        self.env.sim.forward()
        self._obs = None

    def close(self) -> None:
        self.env.close()


class LiftExpert(ScriptedExpert):
    """Above the cube, down, close, lift: a phase machine on the privileged cube pose."""

    medium_noise = 0.35
    medium_random_probability = 0.2
    gain = 10.0  # command units per meter of position error (1 unit = 0.05 m per step)

    def reset(self) -> None:
        self.phase, self.grasp_ticks = "above", 0

    def clean_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        if not hasattr(self, "phase"):
            self.reset()
        eef, cube = observation["eef_pose"][:3], observation["object_pose"][:3]
        gripper = -1.0
        if self.phase == "above":
            target = cube + np.array([0.0, 0.0, 0.06])
            if np.linalg.norm(target - eef) < 0.01:
                self.phase = "down"
        elif self.phase == "down":
            target = cube + np.array([0.0, 0.0, -0.01])
            if np.linalg.norm((target - eef)[:2]) < 0.01 and eef[2] - cube[2] < 0.005:
                self.phase = "grasp"
        elif self.phase == "grasp":
            target, gripper = eef.copy(), 1.0
            self.grasp_ticks += 1
            if self.grasp_ticks >= 8:
                self.phase = "lift"
        else:
            target, gripper = np.array([cube[0], cube[1], cube[2] + 0.2]), 1.0
            if np.linalg.norm((cube - eef)[:2]) > 0.04:  # the cube slipped away: start over
                self.phase, self.grasp_ticks = "above", 0
        action = np.zeros(7)
        action[:3] = np.clip(self.gain * (target - eef), -1.0, 1.0)
        action[6] = gripper
        return action
