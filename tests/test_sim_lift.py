"""The robosuite Lift task: commands, seeding, cameras, dynamics variants and the scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.errors import SimError
from robot_stack.sim.dynamics import make_dynamics
from robot_stack.sim.experts import make_expert
from robot_stack.sim.task import make_task


@pytest.fixture(scope="module")
def lift():
    task = make_task("lift", seed=0)
    yield task
    task.close()


def run_expert(task, seed: int, steps: int, skill: str = "expert") -> bool:
    task.reset(seed)
    expert = make_expert("lift", task.command_spec, skill, seed=seed)
    expert.reset()
    for _ in range(steps):
        task.step(task.command_spec.validate(expert.act(task.observe())))
        if task.success():
            return True
    return False


def test_the_expert_lifts_the_cube(lift):
    assert run_expert(lift, seed=1, steps=120)
    assert run_expert(lift, seed=2, steps=120)
    assert lift.observe()["object_pose"][2] > 0.83  # the cube is off the table (its rest height is 0.82 m)


def test_random_commands_do_not_lift_the_cube(lift):
    assert not run_expert(lift, seed=3, steps=60, skill="random")


def test_the_same_seed_gives_the_same_placement_and_another_seed_another(lift):
    placements = []
    for seed in (4, 4, 5):
        lift.reset(seed)
        placements.append(lift.observe()["object_pose"][:3])
    np.testing.assert_array_equal(placements[0], placements[1])
    assert np.linalg.norm(placements[0] - placements[2]) > 1e-3


@pytest.mark.parametrize(("axis", "sign"), [(0, 1.0), (1, -1.0), (2, -1.0)])
def test_a_delta_command_moves_the_eef_that_way(lift, axis, sign):
    lift.reset(6)
    start = lift.observe()["eef_pose"][:3]
    command = np.zeros(7)
    command[axis], command[6] = sign, -1.0
    for _ in range(5):
        lift.step(command)
    moved = lift.observe()["eef_pose"][:3] - start
    assert sign * moved[axis] > 0.02
    assert np.abs(np.delete(moved, axis)).max() < abs(moved[axis]) / 2


def test_a_command_of_the_wrong_length_is_refused(lift):
    with pytest.raises(SimError, match="command has 6 values, this robot takes 7"):
        lift.command_spec.validate(np.zeros(6))
    with pytest.raises(SimError, match="lift takes a 7-D command"):
        lift.step(np.zeros(3))


def test_holding_keeps_the_grasp():
    spec = make_task.__globals__["_task_class"]("lift").command_spec
    hold = spec.hold_after(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))
    assert hold.tolist() == [0, 0, 0, 0, 0, 0, 1.0]


def grasped_state(task):
    run_expert(task, seed=7, steps=38)  # closed on the cube and lifting: friction holds it
    return task.get_state()


@pytest.mark.parametrize("override", [
    {"actuator_gain": 0.5}, {"object_mass_scale": 5.0}, {"friction_scale": 0.2},
    {"gravity": (0.0, 0.0, -3.0)}, {"action_delay": 1}, {"action_noise": 0.2},
])
def test_a_dynamics_variant_changes_the_transition_and_nominal_does_not(lift, override):
    state = grasped_state(lift)
    command = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])

    def next_state(dynamics):
        lift.config.dynamics = dynamics
        lift.reset(7)  # applies the variant to the model, empties the delay line
        lift.set_state(state)
        for _ in range(3):
            lift.step(command)
        return lift.get_state()

    try:
        nominal = next_state(make_dynamics("nominal"))
        again = next_state(make_dynamics("nominal"))
        variant = next_state(make_dynamics("nominal", **override))
    finally:
        lift.config.dynamics = make_dynamics("nominal")
    np.testing.assert_array_equal(nominal, again)
    assert np.abs(variant - nominal).max() > 1e-4


def test_cameras_render_right_side_up_at_the_configured_size():
    task = make_task("lift", cameras=["agentview:32x40"], seed=0)
    try:
        task.reset(0)
        image = task.observe()["image/agentview"]
    finally:
        task.close()
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8
    # agentview looks at the robot over the white table: the table fills the bottom rows.
    assert image[-6:].mean() > image[:6].mean() + 30


def test_unknown_camera_and_preset_are_clear_errors():
    with pytest.raises(SimError, match="lift has no camera 'ceiling'; cameras: agentview"):
        make_task("lift", cameras=["ceiling"])
    with pytest.raises(SimError, match="unknown dynamics preset 'mars'"):
        make_task("lift", dynamics="mars")
