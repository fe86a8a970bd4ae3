"""reach2d: a two-link planar arm moves its fingertip to a target on a table; the fast sim task.

The command is a fingertip displacement per control step, (dx, dy) in [-1, 1], where
1.0 means ``MAX_STEP_M`` = 0.02 m (0.4 m/s at the default 20 Hz). A Cartesian impedance
controller running at the physics rate (every 5 ms substep) turns it into joint torques,
like the 1 kHz joint loop of a real arm behind a slower command topic.

What each parameter of a dynamics variant does here:

- ``actuator_gain``: scales the gear of both torque motors: a weaker arm lags its reference
  more and saturates sooner.
- ``gravity``: the z part sets the normal force of the stylus that drags on the table, hence its
  friction; x and y parts (a tilted robot) pull on the links, which the controller resists.
- ``friction_scale``: sliding friction of the stylus on the table.
- ``object_mass_scale``: mass of the stylus (the arm's tool: there is nothing else to carry),
  so both its inertia and its normal force, hence its friction.
- ``action_delay`` / ``action_noise``: through CommandChannel, in control steps / command units.
- ``observation_noise``: added to joint positions [rad] and velocities [rad/s], to the positions
  [m] of ``eef_pose`` and ``object_pose``, and as a yaw angle [rad] to their orientations.

The target is a mocap marker: it has no dynamics, so no variant moves it.
"""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import NominalModel, apply_to_model
from robot_stack.sim.experts import ScriptedExpert
from robot_stack.sim.task import CommandSpec, SimTask, TaskConfig

ASSET = Path(__file__).resolve().parent / "assets" / "planar_reach.xml"

MAX_STEP_M = 0.02  # fingertip displacement per control step of a command element 1.0 [m]
SUCCESS_RADIUS_M = 0.02  # planar fingertip-target distance that counts as reached [m]

# Where targets are drawn: polar coordinates around the shoulder, in front of the arm.
# The sector keeps the straight path from the start pose clear of the elbow's limit near the base.
TARGET_RADIUS_M = (0.15, 0.36)
TARGET_ANGLE_RAD = (-math.radians(70.0), math.radians(70.0))
TARGET_MIN_DISTANCE_M = 0.08  # from the start fingertip, so no episode starts solved
START_JOINTS_RAD = (-0.9, 1.8)  # fingertip about 0.25 m in front of the shoulder
START_JITTER_RAD = 0.05


class PlanarArmController:
    """Fingertip impedance control of the two-link arm, run once per physics substep.

    A reference point moves with the commanded velocity [m/s]; the fingertip is pulled to it
    by a spring-damper (``STIFFNESS`` N/m, ``DAMPING`` N s/m) mapped to joint torques through
    the Jacobian transpose. The reference never leads the fingertip by more than ``MAX_LEAD_M``,
    so a blocked or weak arm does not wind up. With a zero velocity it holds its position.
    Kinematics are closed-form (link lengths read from the model): this loop runs in Python
    10 times per control step, and scalar math is far cheaper than MuJoCo's Jacobian calls here.
    """

    STIFFNESS = 400.0
    DAMPING = 30.0
    MAX_LEAD_M = 0.03

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model, self.data = model, data
        joints = [model.joint(name) for name in PlanarReachTask.joint_names]
        self.qpos_index = [int(j.qposadr[0]) for j in joints]
        self.dof_index = [int(j.dofadr[0]) for j in joints]
        self.upper_length = float(model.body("forearm").pos[0])
        self.fore_length = float(model.site("fingertip").pos[0])
        shoulder = model.body("upper_arm").pos
        self.base_x, self.base_y = float(shoulder[0]), float(shoulder[1])
        # ctrl is motor torque; the nominal gear turns the wanted joint torque into it, so a
        # variant's actuator_gain (a changed gear) changes the torque that actually arrives.
        self.actuator_index = [model.actuator(name).id for name in PlanarReachTask.joint_names]
        self.gear = [float(model.actuator(name).gear[0]) for name in PlanarReachTask.joint_names]
        self.reference = np.zeros(2)  # [m], world x y

    def fingertip(self) -> tuple[float, float]:
        """Fingertip x, y [m] of the current joint angles."""
        q1, q2 = self.data.qpos[self.qpos_index[0]], self.data.qpos[self.qpos_index[1]]
        return (self.base_x + self.upper_length * math.cos(q1) + self.fore_length * math.cos(q1 + q2),
                self.base_y + self.upper_length * math.sin(q1) + self.fore_length * math.sin(q1 + q2))

    def hold_here(self) -> None:
        """Put the reference on the fingertip (after a reset)."""
        self.reference[:] = self.fingertip()

    def run(self, velocity_x: float, velocity_y: float, substeps: int) -> None:
        """Step the physics ``substeps`` times, moving the reference at (velocity_x, velocity_y) m/s."""
        model, data = self.model, self.data
        qpos, qvel, ctrl = data.qpos, data.qvel, data.ctrl
        (i1, i2), (v1, v2), (a1, a2) = self.qpos_index, self.dof_index, self.actuator_index
        l1, l2, bx, by = self.upper_length, self.fore_length, self.base_x, self.base_y
        kp, kd, max_lead = self.STIFFNESS, self.DAMPING, self.MAX_LEAD_M
        gear1, gear2 = self.gear
        dt = model.opt.timestep
        rx, ry = float(self.reference[0]), float(self.reference[1])
        for _ in range(substeps):
            q1, q2, dq1, dq2 = float(qpos[i1]), float(qpos[i2]), float(qvel[v1]), float(qvel[v2])
            c1, s1, c12, s12 = math.cos(q1), math.sin(q1), math.cos(q1 + q2), math.sin(q1 + q2)
            x, y = bx + l1 * c1 + l2 * c12, by + l1 * s1 + l2 * s12
            # Jacobian d(x, y)/d(q1, q2).
            j11, j12, j21, j22 = -l1 * s1 - l2 * s12, -l2 * s12, l1 * c1 + l2 * c12, l2 * c12
            rx += velocity_x * dt
            ry += velocity_y * dt
            lead = math.hypot(rx - x, ry - y)
            if lead > max_lead:
                rx, ry = x + (rx - x) * max_lead / lead, y + (ry - y) * max_lead / lead
            fx = kp * (rx - x) + kd * (velocity_x - (j11 * dq1 + j12 * dq2))
            fy = kp * (ry - y) + kd * (velocity_y - (j21 * dq1 + j22 * dq2))
            ctrl[a1] = (j11 * fx + j21 * fy) / gear1
            ctrl[a2] = (j12 * fx + j22 * fy) / gear2
            mujoco.mj_step(model, data)
        self.reference[0], self.reference[1] = rx, ry


class PlanarReachTask(SimTask):
    """Move the fingertip of a two-link planar arm onto a target marker on the table.

    Command: (dx, dy) in [-1, 1], the fingertip displacement per control step in units of
    ``MAX_STEP_M`` (0.02 m); it passes the variant's delay and noise, is clipped to [-1, 1],
    and becomes the velocity of the controller's reference. Reward: minus the planar
    (x-y) distance between fingertip and target [m]; success: that distance < 0.02 m.
    The arm starts near joint angles (-0.9, 1.8) rad; the target is drawn uniformly in a
    sector of radius 0.15-0.36 m and angle +-70 deg around the shoulder, both from the reset seed.
    """

    name = "reach2d"
    # Control steps: 1.5 s at 20 Hz. The expert needs at most about 18 steps (also under "real",
    # "laggy", "weak_actuators"); a slower, sloppier operator runs out of time on far targets.
    default_horizon = 30
    joint_names = ("shoulder", "elbow")
    command_spec = CommandSpec(
        meaning=f"eef_delta_xy: fingertip dx, dy per control step, 1.0 = {MAX_STEP_M} m",
        names=("dx", "dy"), low=(-1.0, -1.0), high=(1.0, 1.0), hold=(0.0, 0.0),
    )

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        self.model = mujoco.MjModel.from_xml_path(str(ASSET))
        self.data = mujoco.MjData(self.model)
        self.nominal = NominalModel.capture(self.model, object_bodies=[self.model.body("stylus").id])
        self.substeps = max(1, round(1.0 / (config.control_hz * self.model.opt.timestep)))
        # Per-step scale so a command of 1.0 moves MAX_STEP_M in one control period as simulated.
        self.velocity_per_command = MAX_STEP_M / (self.substeps * self.model.opt.timestep)
        self.controller = PlanarArmController(self.model, self.data)
        self._fingertip_site = self.model.site("fingertip").id
        self._forearm_body = self.model.body("forearm").id
        self._target_mocap = int(self.model.body("target").mocapid[0])
        self._start_runtime()
        self.reset(config.seed)  # a valid episode from the start, as a powered-on robot is

    # -- episode
    def reset(self, seed: int | None = None) -> None:
        """New episode: start pose jitter, target placement and the noise streams all follow ``seed``;
        ``None`` takes the next seed from the task's own generator (seeded by ``config.seed``)."""
        if seed is None:
            seed = int(self._seeds.integers(2**63))
        elif int(seed) < 0:
            raise SimError(f"reach2d reset seed must be >= 0, got {seed}")
        placement, action_noise, observation_noise = np.random.default_rng(seed).spawn(3)
        apply_to_model(self.model, self.nominal, self.config.dynamics)
        self.channel.dynamics = self.config.dynamics
        mujoco.mj_resetData(self.model, self.data)
        start = np.asarray(START_JOINTS_RAD) + placement.uniform(-START_JITTER_RAD, START_JITTER_RAD, 2)
        self.data.qpos[self.controller.qpos_index] = start
        self.data.mocap_pos[self._target_mocap] = self._draw_target(placement)
        mujoco.mj_forward(self.model, self.data)
        self.controller.hold_here()
        self.channel.rng = action_noise
        self.channel.reset(np.asarray(self.command_spec.hold))
        self._observation_rng = observation_noise
        self._steps = 0

    def _draw_target(self, rng: np.random.Generator) -> np.ndarray:
        start = np.asarray(self.controller.fingertip())
        base = np.array([self.controller.base_x, self.controller.base_y])
        while True:
            # Uniform over the sector's area, not its radius.
            radius = math.sqrt(rng.uniform(TARGET_RADIUS_M[0] ** 2, TARGET_RADIUS_M[1] ** 2))
            angle = rng.uniform(*TARGET_ANGLE_RAD)
            target = base + radius * np.array([math.cos(angle), math.sin(angle)])
            if np.linalg.norm(target - start) >= TARGET_MIN_DISTANCE_M:
                return np.array([target[0], target[1], 0.0])

    def step(self, command: np.ndarray) -> None:
        """Advance one control step; ``command`` is (dx, dy), validated again here (SimError if not 2 values)."""
        command = self.command_spec.validate(command)
        applied = np.clip(self.channel(command), self._low, self._high)
        scale = self.velocity_per_command
        self.controller.run(float(applied[0]) * scale, float(applied[1]) * scale, self.substeps)
        # mj_step leaves positions of the previous substep in xpos/site_xpos: refresh for observe/render.
        mujoco.mj_kinematics(self.model, self.data)
        self._steps += 1

    # -- what the robot reports
    def observe(self) -> dict[str, np.ndarray]:
        noise = self.config.dynamics.observation_noise
        joints, dofs = self.controller.qpos_index, self.controller.dof_index
        quat = self.data.xquat[self._forearm_body]  # w x y z, a rotation about z only
        observation = {
            "joint_position": self.data.qpos[joints].copy(),
            "joint_velocity": self.data.qvel[dofs].copy(),
            "eef_pose": np.concatenate([self.data.site_xpos[self._fingertip_site], quat[1:], quat[:1]]),
            "object_pose": np.concatenate([self.data.mocap_pos[self._target_mocap], [0.0, 0.0, 0.0, 1.0]]),
        }
        if noise:
            rng = self._observation_rng
            observation["joint_position"] += rng.normal(0.0, noise, 2)
            observation["joint_velocity"] += rng.normal(0.0, noise, 2)
            for key in ("eef_pose", "object_pose"):
                _perturb_planar_pose(observation[key], rng.normal(0.0, noise, 4))
        for camera, renderer in self._renderers:
            renderer.update_scene(self.data, camera=camera)
            observation[f"image/{camera}"] = renderer.render()
        return observation

    def distance(self) -> float:
        """Planar fingertip-target distance [m]."""
        fingertip = self.data.site_xpos[self._fingertip_site]
        target = self.data.mocap_pos[self._target_mocap]
        return math.hypot(fingertip[0] - target[0], fingertip[1] - target[1])

    def reward(self) -> float:
        return -self.distance()

    def success(self) -> bool:
        return self.distance() < SUCCESS_RADIUS_M

    # -- state
    def get_state(self) -> np.ndarray:
        """MuJoCo's integration state (time, qpos, qvel, act, warm start, ctrl, mocap target, ...)
        followed by the controller reference x, y [m]."""
        mujoco.mj_getState(self.model, self.data, self._physics_state, self._state_spec)
        return np.concatenate([self._physics_state, self.controller.reference])

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=float).reshape(-1)
        size = self._physics_state.size + 2
        if state.size != size:
            raise SimError(f"reach2d state has {size} values, got {state.size}: pass an array from get_state()")
        mujoco.mj_setState(self.model, self.data, state[:-2], self._state_spec)
        self.controller.reference[:] = state[-2:]
        mujoco.mj_forward(self.model, self.data)

    # -- cameras
    def _make_renderers(self) -> list[tuple[str, mujoco.Renderer]]:
        if not self.config.cameras:
            return []
        cameras = [self.model.camera(i).name for i in range(self.model.ncam)]
        for spec in self.config.cameras:
            if spec.name not in cameras:
                raise SimError(f"reach2d has no camera {spec.name!r}; cameras: {', '.join(cameras)}")
        # The offscreen buffer must hold the largest image asked for.
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, *(c.width for c in self.config.cameras))
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight,
                                               *(c.height for c in self.config.cameras))
        renderers = []
        try:
            for spec in self.config.cameras:
                renderers.append((spec.name, mujoco.Renderer(self.model, spec.height, spec.width)))
        except Exception as error:  # the GL backend is the user's environment: say how to pick one
            for _, renderer in renderers:
                renderer.close()
            raise SimError(f"cannot render reach2d camera images ({error}); set MUJOCO_GL=egl (GPU) or "
                           "MUJOCO_GL=osmesa (CPU) before starting Python") from error
        return renderers

    def close(self) -> None:
        for _, renderer in self._renderers:
            renderer.close()
        self._renderers = []


def _perturb_planar_pose(pose: np.ndarray, noise: np.ndarray) -> None:
    """Add noise[:3] [m] to a pose's position and turn its orientation by noise[3] [rad] about z, in place."""
    pose[:3] += noise[:3]
    # Composing two rotations about z: the quaternion stays unit length.
    half = 0.5 * noise[3]
    z, w = pose[5], pose[6]
    pose[5], pose[6] = z * math.cos(half) + w * math.sin(half), w * math.cos(half) - z * math.sin(half)


class PlanarReachExpert(ScriptedExpert):
    """Moves the fingertip straight at the target: a P-controller on the observed positions.

    The command is ``GAIN`` x the remaining planar offset in command units, scaled down as a
    whole (keeping its direction) when an element would exceed 1.
    """

    GAIN = 0.4  # fraction of the remaining offset commanded per step (< 1: the arm lags a step)
    # Tuned for the default horizon: `medium` reaches the target in most episodes but is on it at
    # the end in only about half (noise), and runs out of time on some far targets (random steps).
    medium_noise = 0.4
    medium_random_probability = 0.5

    def clean_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        offset = observation["object_pose"][:2] - observation["eef_pose"][:2]
        command = self.GAIN * offset / MAX_STEP_M
        return command / max(1.0, float(np.max(np.abs(command))))
