"""The fast planar reach task: speed-relevant structure, seeding, commands, cameras, dynamics variants."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import make_dynamics
from robot_stack.sim.experts import make_expert
from robot_stack.sim.task import make_task


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


def test_the_expert_reaches_the_target_and_random_mostly_does_not(reach):
    assert all(episode(reach, seed) for seed in range(10))
    assert sum(episode(reach, seed, "random") for seed in range(10)) <= 3


def test_seeds_decide_the_target(reach):
    targets = []
    for seed in (1, 1, 2):
        reach.reset(seed)
        targets.append(reach.observe()["object_pose"][:2].copy())
    np.testing.assert_array_equal(targets[0], targets[1])
    assert np.linalg.norm(targets[0] - targets[2]) > 1e-3


def test_a_command_moves_the_fingertip_that_way(reach):
    reach.reset(3)
    start = reach.observe()["eef_pose"][:2]
    for _ in range(5):
        reach.step(np.array([0.0, 1.0]))
    moved = reach.observe()["eef_pose"][:2] - start
    assert moved[1] > 0.05 and abs(moved[0]) < moved[1] / 2


def test_a_command_of_the_wrong_length_is_refused(reach):
    with pytest.raises(SimError, match="command has 3 values, this robot takes 2"):
        reach.step(np.zeros(3))


@pytest.mark.parametrize("override", [
    {"gravity": (0.0, 0.0, -30.0)}, {"object_mass_scale": 4.0}, {"actuator_gain": 0.3},
    {"action_delay": 1}, {"action_noise": 0.3},
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


def test_observation_noise_changes_observations_not_the_state(reach):
    clean = make_task("reach2d", seed=0)
    noisy = make_task("reach2d", seed=0, dynamics="noisy")
    clean.reset(5)
    noisy.reset(5)
    assert np.abs(clean.observe()["joint_position"] - noisy.observe()["joint_position"]).max() > 1e-4


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
    assert np.abs(before.astype(int) - after.astype(int)).sum() > 0
