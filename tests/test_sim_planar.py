"""The fast planar reach task: seeding, commands, observations, cameras, state, dynamics variants, expert."""

from __future__ import annotations

import math
import os

# Camera tests render off-screen on CPU; set before anything imports mujoco (a user's choice wins).
os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robot_stack.errors import SimError  # noqa: E402
from robot_stack.sim import planar  # noqa: E402
from robot_stack.sim.dynamics import make_dynamics  # noqa: E402
from robot_stack.sim.experts import make_expert  # noqa: E402
from robot_stack.sim.task import make_task  # noqa: E402


@pytest.fixture(scope="module")
def reach():
    task = make_task("reach2d", seed=0)
    yield task
    task.close()


def episode(task, seed: int, skill: str = "expert") -> bool:
    task.reset(seed)
    expert = make_expert("reach2d", task.command_spec, skill, seed=seed)
    while not task.done:
        task.step(expert.act(task.observe()))
        if task.success():
            return True
    return False


def fingertip(task) -> np.ndarray:
    return task.observe()["eef_pose"][:2].copy()


def test_the_expert_reaches_the_target_and_random_mostly_does_not(reach):
    assert all(episode(reach, seed) for seed in range(10))
    assert sum(episode(reach, seed, "random") for seed in range(10)) <= 3


def test_the_expert_also_reaches_the_target_on_the_real_stand_in():
    task = make_task("reach2d", dynamics="real", seed=0)
    assert all(episode(task, seed) for seed in range(5))
    assert task.success()  # and stays there to the end of the episode


def test_the_task_is_built_the_documented_way_with_the_documented_observation():
    task = make_task("reach2d", cameras=["top"], dynamics="real")
    try:
        observation = task.observe()
    finally:
        task.close()
    assert set(observation) == {"joint_position", "joint_velocity", "eef_pose", "object_pose", "image/top"}
    assert observation["joint_position"].shape == observation["joint_velocity"].shape == (2,)
    assert observation["eef_pose"].shape == observation["object_pose"].shape == (7,)
    assert observation["image/top"].shape == (84, 84, 3) and observation["image/top"].dtype == np.uint8
    assert all(observation[k].dtype == np.float64 for k in ("joint_position", "eef_pose", "object_pose"))
    assert task.config.horizon == planar.PlanarReachTask.default_horizon


def test_eef_pose_is_the_fingertip_and_the_forearm_heading(reach):
    reach.reset(2)
    for _ in range(4):
        reach.step(np.array([0.5, -1.0]))
    observation = reach.observe()
    q1, q2 = observation["joint_position"]
    # The controller's closed-form kinematics agree with MuJoCo's fingertip site.
    np.testing.assert_allclose(reach.controller.fingertip(), observation["eef_pose"][:2], atol=1e-12)
    quat = observation["eef_pose"][3:]
    np.testing.assert_allclose(quat, [0.0, 0.0, math.sin((q1 + q2) / 2), math.cos((q1 + q2) / 2)], atol=1e-9)
    np.testing.assert_allclose(observation["object_pose"][3:], [0.0, 0.0, 0.0, 1.0])


def test_seeds_decide_the_target(reach):
    targets = []
    for seed in (1, 1, 2):
        reach.reset(seed)
        targets.append(reach.observe()["object_pose"][:2].copy())
    np.testing.assert_array_equal(targets[0], targets[1])
    assert np.linalg.norm(targets[0] - targets[2]) > 1e-3


def test_targets_are_distinct_reachable_and_not_already_reached(reach):
    targets = []
    for seed in range(20):
        reach.reset(seed)
        target = reach.observe()["object_pose"][:2].copy()
        radius = np.linalg.norm(target)  # the shoulder is at the origin
        assert planar.TARGET_RADIUS_M[0] - 1e-9 <= radius <= planar.TARGET_RADIUS_M[1] + 1e-9
        assert -reach.reward() >= planar.TARGET_MIN_DISTANCE_M and not reach.success()
        targets.append(target)
    assert len({tuple(t) for t in targets}) == len(targets)


def test_the_same_seed_gives_the_same_trajectory_noise_included():
    commands = np.random.default_rng(0).uniform(-1, 1, (15, 2))

    def trajectory(task):
        task.reset(9)
        observations = [task.observe()]
        for command in commands:
            task.step(command)
            observations.append(task.observe())
        return observations

    first = trajectory(make_task("reach2d", dynamics="real", seed=1))
    second = trajectory(make_task("reach2d", dynamics="real", seed=2))
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_reset_without_a_seed_follows_the_task_seed():
    def targets(seed):
        task = make_task("reach2d", seed=seed)
        drawn = []
        for _ in range(3):
            task.reset()
            drawn.append(tuple(task.observe()["object_pose"][:2]))
        return drawn

    assert targets(3) == targets(3)
    assert len(set(targets(3))) == 3 and targets(3) != targets(4)


def test_a_negative_seed_is_refused(reach):
    with pytest.raises(SimError, match="seed must be >= 0"):
        reach.reset(-1)


@pytest.mark.parametrize("direction", [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (0.7, -0.7)])
def test_a_command_moves_the_fingertip_that_way(reach, direction):
    reach.reset(3)
    start = fingertip(reach)
    for _ in range(4):
        reach.step(np.array(direction))
    moved = fingertip(reach) - start
    direction = np.asarray(direction) / np.linalg.norm(direction)
    assert moved @ direction > 0.04  # 4 steps of up to 0.02 m
    assert moved @ direction > 0.95 * np.linalg.norm(moved)


def test_the_hold_command_keeps_a_resting_arm_still(reach):
    reach.reset(3)
    start = fingertip(reach)
    for _ in range(20):
        reach.step(np.array(reach.command_spec.hold))
    assert np.linalg.norm(fingertip(reach) - start) < 1e-6


def test_after_a_motion_the_hold_command_brings_the_arm_to_rest_on_its_reference(reach):
    reach.reset(3)
    for _ in range(4):
        reach.step(np.array([1.0, 1.0]))
    for _ in range(10):
        reach.step(np.zeros(2))
    settled = fingertip(reach)
    for _ in range(10):
        reach.step(np.zeros(2))
    # The stylus sticks within a few mm of the reference (spring force below its friction) and creeps.
    assert np.linalg.norm(fingertip(reach) - settled) < 2e-3
    assert np.linalg.norm(fingertip(reach) - reach.controller.reference) < 5e-3


def test_a_command_of_the_wrong_length_is_refused(reach):
    with pytest.raises(SimError, match=r"command has 3 values, this robot takes 2 \(dx, dy\)"):
        reach.command_spec.validate([0.0, 0.0, 0.0])
    with pytest.raises(SimError, match="command has 3 values, this robot takes 2"):
        reach.step(np.zeros(3))


def test_a_state_of_the_wrong_size_is_refused(reach):
    with pytest.raises(SimError, match="pass an array from get_state"):
        reach.set_state(np.zeros(3))


@pytest.mark.parametrize("override", [
    {"gravity": (0.0, 0.0, -30.0)}, {"gravity": (2.0, 0.0, -9.81)}, {"friction_scale": 0.3},
    {"object_mass_scale": 4.0}, {"actuator_gain": 0.3}, {"action_delay": 1}, {"action_noise": 0.3},
])
def test_a_dynamics_variant_changes_the_transition_and_nominal_does_not(reach, override):
    reach.config.dynamics = make_dynamics("nominal")
    reach.reset(4)
    for _ in range(3):
        reach.step(np.array([1.0, 0.5]))
    state = reach.get_state()

    def next_state(dynamics):
        reach.config.dynamics = dynamics
        reach.reset(4)
        reach.set_state(state)
        for _ in range(2):
            reach.step(np.array([-1.0, 1.0]))
        return reach.get_state()

    try:
        nominal, again = next_state(make_dynamics("nominal")), next_state(make_dynamics("nominal"))
        variant = next_state(make_dynamics("nominal", **override))
    finally:
        reach.config.dynamics = make_dynamics("nominal")
    np.testing.assert_array_equal(nominal, again)
    assert np.abs(variant - nominal).max() > 1e-5


def test_set_state_reproduces_a_transition_in_another_task():
    source = make_task("reach2d", seed=0)
    source.reset(6)
    for _ in range(3):
        source.step(np.array([0.3, -0.8]))
    state = source.get_state()
    source.step(np.array([-0.5, 0.5]))
    other = make_task("reach2d", seed=0)
    other.reset(1)  # a different episode: set_state must carry the target and controller too
    other.set_state(state)
    other.step(np.array([-0.5, 0.5]))
    np.testing.assert_array_equal(other.get_state(), source.get_state())
    assert other.reward() == source.reward()


def test_observation_noise_changes_observations_not_the_state(reach):
    clean = make_task("reach2d", seed=0)
    noisy = make_task("reach2d", seed=0, dynamics="noisy")
    clean.reset(5)
    noisy.reset(5)
    np.testing.assert_array_equal(clean.get_state(), noisy.get_state())
    for key in ("joint_position", "joint_velocity", "eef_pose", "object_pose"):
        assert np.abs(clean.observe()[key] - noisy.observe()[key]).max() > 1e-4
    assert np.linalg.norm(noisy.observe()["eef_pose"][3:]) == pytest.approx(1.0)


def test_an_unknown_dynamics_preset_is_refused():
    with pytest.raises(SimError, match="unknown dynamics preset 'mars'; presets: nominal"):
        make_task("reach2d", dynamics="mars")


def test_the_top_camera_renders_the_configured_size_and_sees_the_arm_move():
    task = make_task("reach2d", cameras=["top:40x48"], seed=0)
    try:
        task.reset(0)
        before = task.observe()["image/top"].copy()
        for _ in range(8):
            task.step(np.array([1.0, 1.0]))
        after = task.observe()["image/top"]
    finally:
        task.close()
    assert before.shape == (40, 48, 3) and before.dtype == np.uint8
    assert before.std() > 0  # a rendered scene, not a blank buffer
    assert np.abs(before.astype(int) - after.astype(int)).sum() > 0


def test_no_camera_means_no_image_and_an_unknown_camera_is_refused(reach):
    assert not any(key.startswith("image/") for key in reach.observe())
    with pytest.raises(SimError, match="reach2d has no camera 'wrist'; cameras: top"):
        make_task("reach2d", cameras=["wrist"])
