"""The robosuite Lift task: commands, hold, seeding, exact state restore, cameras, dynamics variants, expert."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import make_dynamics
from robot_stack.sim.experts import make_expert
from robot_stack.sim.task import command_spec_of, make_task

TABLE_TOP_Z = 0.8  # robosuite Lift's table top [m]; the cube's centre rests about 0.02 m above it


@pytest.fixture(scope="module")
def lift():
    task = make_task("lift", seed=0)
    yield task
    task.close()


@pytest.fixture
def nominal(lift):
    """The shared task, put back to nominal dynamics after a test changed them."""
    yield lift
    lift.config.dynamics = make_dynamics("nominal")


def run_expert(task, seed: int, steps: int, skill: str = "expert", stop_on_success: bool = True):
    """Run the expert from reset(seed); returns (succeeded, last command)."""
    task.reset(seed)
    expert = make_expert("lift", task.command_spec, skill, seed=seed)
    command = None
    for _ in range(steps):
        command = task.command_spec.validate(expert.act(task.observe()))
        task.step(command)
        if stop_on_success and task.success():
            return True, command
    return task.success(), command


def test_the_expert_lifts_the_cube(lift):
    for seed in (1, 2):
        succeeded, _ = run_expert(lift, seed, steps=120)
        assert succeeded, f"seed {seed}"
        assert lift.observe()["object_pose"][2] > TABLE_TOP_Z + 0.04


def test_random_commands_do_not_lift_the_cube(lift):
    succeeded, _ = run_expert(lift, seed=3, steps=60, skill="random")
    assert not succeeded


def test_holding_after_a_grasp_keeps_the_cube_in_the_air(lift):
    succeeded, last = run_expert(lift, seed=4, steps=120)
    assert succeeded and last[6] > 0
    hold = lift.command_spec.hold_after(last)
    assert hold.tolist() == [0, 0, 0, 0, 0, 0, last[6]]  # no motion, the gripper stays closed
    eef = lift.observe()["eef_pose"][:3]
    for _ in range(40):  # 2 s of a watchdog holding
        lift.step(hold)
    assert lift.success()
    assert np.linalg.norm(lift.observe()["eef_pose"][:3] - eef) < 0.03


def test_the_same_seed_gives_the_same_episode_start_and_another_seed_another(lift):
    lift.reset(5)
    first = lift.get_state()
    lift.step(np.ones(7))  # whatever the last episode did must not leak into the next one
    lift.reset(5)
    np.testing.assert_array_equal(lift.get_state(), first)
    cube = lift.observe()["object_pose"][:3]
    lift.reset(6)
    assert np.linalg.norm(lift.observe()["object_pose"][:3] - cube) > 1e-3
    lift.reset()
    unseeded = lift.observe()["object_pose"][:3]
    lift.reset()
    assert np.linalg.norm(lift.observe()["object_pose"][:3] - unseeded) > 1e-3


def test_observations_have_the_documented_keys_shapes_and_conventions(lift):
    lift.reset(7)
    observation = lift.observe()
    assert set(observation) == {"joint_position", "joint_velocity", "eef_pose", "object_pose"}
    assert observation["joint_position"].shape == observation["joint_velocity"].shape == (9,)
    assert len(lift.joint_names) == 9
    fingers = observation["joint_position"][7:]
    assert np.all(fingers > 0.01) and abs(fingers[0] - fingers[1]) < 1e-3  # franka_ros: openings, both >= 0
    for key in ("eef_pose", "object_pose"):
        assert observation[key].shape == (7,) and observation[key].dtype == np.float64
        assert abs(np.linalg.norm(observation[key][3:]) - 1.0) < 1e-9
    # xyzw: the gripper points down at the start, so its z axis is about world -z.
    x, y, z, w = observation["eef_pose"][3:]
    gripper_z_axis_z = 1.0 - 2.0 * (x * x + y * y)
    assert gripper_z_axis_z < -0.9
    assert TABLE_TOP_Z < observation["object_pose"][2] < TABLE_TOP_Z + 0.04  # on the table, not lifted
    assert not lift.success()


@pytest.mark.parametrize(("axis", "sign"), [(0, 1.0), (1, -1.0), (2, -1.0)])
def test_a_delta_command_moves_the_eef_that_way(lift, axis, sign):
    lift.reset(8)
    start = lift.observe()["eef_pose"][:3]
    command = np.zeros(7)
    command[axis] = sign
    for _ in range(5):
        lift.step(command)
    moved = lift.observe()["eef_pose"][:3] - start
    assert sign * moved[axis] > 0.03  # 5 steps of 1.0: about 0.05 m
    assert np.abs(np.delete(moved, axis)).max() < abs(moved[axis]) / 4


def test_a_command_of_the_wrong_length_or_a_bad_rate_is_refused(lift):
    with pytest.raises(SimError, match="command has 3 values, this robot takes 7"):
        lift.step(np.zeros(3))
    with pytest.raises(SimError, match="lift cannot run at control_hz=30"):
        make_task("lift", control_hz=30)
    assert command_spec_of("lift").meaning == "eef_delta_pose_gripper"


def test_set_state_repeats_a_transition_exactly(lift):
    # Mid-grasp: fingers closing, so the gripper's and OSC's own state matter too.
    run_expert(lift, seed=9, steps=30, stop_on_success=False)
    state, observation = lift.get_state(), lift.observe()
    commands = [np.array([0.2, -0.1, 0.5, 0.1, 0.0, -0.2, 1.0])] * 3

    def after(commands):
        for command in commands:
            lift.step(command)
        return lift.get_state()

    expected = after(commands)
    lift.reset(10)  # another episode in between: another start pose for OSC's null space
    lift.set_state(state)
    restored = lift.observe()
    for key in observation:
        np.testing.assert_array_equal(restored[key], observation[key])
    np.testing.assert_array_equal(after(commands), expected)
    with pytest.raises(SimError, match="pass what get_state returned"):
        lift.set_state(state[:-1])


@pytest.mark.parametrize("override", [
    {"actuator_gain": 0.5}, {"object_mass_scale": 5.0}, {"friction_scale": 0.2},
    {"gravity": (0.0, 0.0, -3.0)}, {"action_delay": 1}, {"action_noise": 0.2},
])
def test_a_dynamics_variant_changes_the_transition_and_nominal_does_not(nominal, override):
    lift = nominal
    assert run_expert(lift, seed=11, steps=120)[0]  # the cube is held in the air
    state = lift.get_state()
    command = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])

    def next_state(dynamics):
        lift.config.dynamics = dynamics
        lift.reset(11)  # applies the variant to the model, empties the delay line
        lift.set_state(state)
        for _ in range(3):
            lift.step(command)
        return lift.get_state()

    reference = next_state(make_dynamics("nominal"))
    np.testing.assert_array_equal(next_state(make_dynamics("nominal")), reference)
    assert np.abs(next_state(make_dynamics("nominal", **override)) - reference).max() > 1e-4


def test_observation_noise_perturbs_observations_but_not_the_state(nominal):
    lift = nominal
    lift.reset(12)
    clean, state = lift.observe(), lift.get_state()
    lift.config.dynamics = make_dynamics("nominal", observation_noise=0.01)
    lift.reset(12)
    noisy = lift.observe()
    np.testing.assert_array_equal(lift.get_state(), state)
    assert 0.001 < np.abs(noisy["eef_pose"][:3] - clean["eef_pose"][:3]).max() < 0.05
    assert abs(np.linalg.norm(noisy["eef_pose"][3:]) - 1.0) < 1e-9


def project(task, camera: str, point: np.ndarray, height: int, width: int) -> tuple[float, float]:
    """(row, column) of a world point in a camera image whose row 0 is the top."""
    model, data = task.model, task.data
    cam = model.camera(camera).id
    local = data.cam_xmat[cam].reshape(3, 3).T @ (point - data.cam_xpos[cam])  # camera looks along its -z
    focal = (height / 2) / math.tan(math.radians(model.cam_fovy[cam]) / 2)
    return height / 2 - focal * local[1] / -local[2], width / 2 + focal * local[0] / -local[2]


def test_cameras_render_right_side_up_at_the_configured_sizes():
    task = make_task("lift", cameras=["frontview:96x128", "agentview:24x32"], seed=0)
    try:
        task.reset(0)
        observation = task.observe()
        cube = observation["object_pose"][:3]
        row, column = project(task, "frontview", cube, 96, 128)
    finally:
        task.close()
    assert observation["image/agentview"].shape == (24, 32, 3)
    image = observation["image/frontview"]
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    # The red cube sits where projecting its position says, not at the mirrored row.
    pixels = image.astype(int)
    red = (pixels[..., 0] > 100) & (pixels[..., 0] > 2 * pixels[..., 1]) & (pixels[..., 0] > 2 * pixels[..., 2])
    rows, columns = np.nonzero(red)
    assert rows.size >= 4
    assert abs(rows.mean() - row) < 2 and abs(columns.mean() - column) < 2
    assert abs((95 - row) - row) > 16  # the check can tell up from down


def test_an_unknown_camera_is_a_clear_error():
    with pytest.raises(SimError, match="lift has no camera 'ceiling'; cameras: .*agentview.*robot0_eye_in_hand"):
        make_task("lift", cameras=["ceiling"])
