"""The deploy safety filter (robot_stack.deploy.safety): properties that hold whatever a model outputs (hypothesis),
on the sim robots' real command specs and on generated joint-style ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_stack.deploy.safety import SafetyFilter, SafetyLimits
from robot_stack.errors import DeployError
from robot_stack.sim.task import command_spec_of

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-9

# What a broken model can emit: NaN, infinities, huge and tiny numbers, ordinary ones.
ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 1e-300, -5e-324]),
                      st.floats(-3.0, 3.0))


def card_command(task: str) -> dict:
    """The model card's ``command`` for a sim task, from the task's CommandSpec (sticky as element names)."""
    spec = command_spec_of(task)
    return {"names": list(spec.names), "low": list(spec.low), "high": list(spec.high), "hold": list(spec.hold),
            "meaning": spec.meaning, "rate_hz": 20.0, "sticky": [spec.names[i] for i in spec.sticky]}


@st.composite
def joint_commands(draw) -> dict:
    """A joint-position style command: 1-4 elements with their own bounds and a hold inside them."""
    size = draw(st.integers(1, 4))
    low = draw(st.lists(st.floats(-3.0, 0.5), min_size=size, max_size=size))
    span = draw(st.lists(st.floats(0.01, 3.0), min_size=size, max_size=size))
    share = draw(st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size))
    high = [lo + s for lo, s in zip(low, span)]
    hold = [lo + f * s for lo, f, s in zip(low, share, span)]
    return {"names": [f"joint{i}" for i in range(size)], "low": low, "high": high, "hold": hold,
            "meaning": "joint_position", "rate_hz": 100.0, "sticky": []}


COMMANDS = st.one_of(st.just(card_command("reach2d")), st.just(card_command("lift")), joint_commands())
LIMIT = st.one_of(st.none(), st.floats(1e-3, 2.0))


def raw_commands(size: int):
    return st.lists(st.lists(ANY_FLOAT, min_size=size, max_size=size), min_size=1, max_size=40)


@PROPERTY
@given(command=COMMANDS, max_step=LIMIT, max_step_change=LIMIT, data=st.data())
def test_output_is_finite_in_bounds_and_within_the_change_limits_whatever_the_model_outputs(
        command, max_step, max_step_change, data) -> None:
    limits = SafetyLimits.from_command(command, max_step=max_step, max_step_change=max_step_change)
    safety = SafetyFilter(limits)
    size = len(command["names"])
    moving = np.array([name not in command["sticky"] for name in command["names"]])
    step = np.inf if max_step is None else max_step
    accel = np.inf if max_step_change is None else max_step_change
    last, last_change = np.asarray(command["hold"], float), np.zeros(size)
    for raw in data.draw(raw_commands(size)):
        out, flags = safety(raw)
        assert out.dtype == np.float64 and out.shape == (size,)
        assert np.all(np.isfinite(out))
        assert np.all(out >= limits.low) and np.all(out <= limits.high)
        change = out - last
        assert np.all(np.abs(change[moving]) <= step * (1 + TOL) + TOL)
        assert np.all(np.abs(change[moving] - last_change[moving]) <= accel * (1 + TOL) + TOL)
        assert ("nonfinite" in flags) == (not np.all(np.isfinite(raw)))
        last, last_change = out, change


@PROPERTY
@given(max_step=LIMIT, max_step_change=LIMIT, data=st.data())
def test_end_effector_stays_in_the_workspace_box_whatever_the_model_outputs(max_step, max_step_change, data) -> None:
    """reach2d (eef_step_m from its meaning, 0.02 m) and lift (given, 0.05 m); the end effector moves exactly as
    commanded, starting anywhere in the box."""
    task, eef_step_m = data.draw(st.sampled_from([("reach2d", None), ("lift", 0.05)]))
    command = card_command(task)
    axes = 2 if task == "reach2d" else 3
    low, high = np.full(axes, -0.1), np.full(axes, 0.1)
    limits = SafetyLimits.from_command(command, max_step=max_step, max_step_change=max_step_change,
                                       workspace_low=low, workspace_high=high, eef_step_m=eef_step_m)
    assert limits.eef_step_m == (0.02 if task == "reach2d" else 0.05)
    safety = SafetyFilter(limits)
    eef = np.array(data.draw(st.lists(st.floats(-0.1, 0.1), min_size=axes, max_size=axes)))
    for raw in data.draw(raw_commands(len(command["names"]))):
        out, _ = safety(raw, eef_position=eef)
        assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)
        eef = eef + out[:axes] * limits.eef_step_m
        assert np.all(eef >= low - TOL) and np.all(eef <= high + TOL)


@PROPERTY
@given(raw=st.lists(ANY_FLOAT, min_size=3, max_size=3),
       eef=st.lists(st.one_of(st.floats(-1.0, 1.0), st.just(float("nan"))), min_size=3, max_size=3))
def test_a_command_never_moves_the_end_effector_further_out_of_the_box(raw, eef) -> None:
    """Measured positions anywhere (outside the box, NaN): inside stays inside, outside moves no further out,
    an unknown position holds."""
    command = card_command("lift")
    limits = SafetyLimits.from_command(command, workspace_low=[-0.2] * 3, workspace_high=[0.2] * 3, eef_step_m=0.05)
    out, _ = SafetyFilter(limits)(raw + [0.0, 0.0, 0.0, 1.0], eef_position=eef)
    here = np.asarray(eef)
    if not np.all(np.isfinite(here)):
        assert np.all(out[:3] == 0.0)
        return
    there = here + out[:3] * 0.05
    outside = np.maximum(here - 0.2, 0) + np.maximum(-0.2 - here, 0)
    assert np.all(np.maximum(there - 0.2, 0) + np.maximum(-0.2 - there, 0) <= outside + TOL)


def test_nonfinite_model_output_gives_the_hold_command_with_the_gripper_kept() -> None:
    safety = SafetyFilter(SafetyLimits.from_command(card_command("lift")))
    out, flags = safety([0.5, -0.5, 0.2, 0.0, 0.0, 0.1, 1.0])
    assert out[6] == 1.0 and not flags
    out, flags = safety([0.5, np.nan, 0.2, 0.0, 0.0, 0.1, -1.0])
    assert flags == {"nonfinite"}
    assert out.tolist() == [0.0] * 6 + [1.0]  # hold, and a closed gripper stays closed: the cube is not dropped
    out, flags = safety([np.inf] * 7)
    assert out.tolist() == [0.0] * 6 + [1.0]


def test_nonfinite_output_under_change_limits_slows_down_toward_hold() -> None:
    safety = SafetyFilter(SafetyLimits.from_command(card_command("reach2d"), max_step=0.25))
    for _ in range(4):
        safety([1.0, -1.0])
    out, flags = safety([np.nan, 0.0])
    assert out.tolist() == [0.75, -0.75] and flags == {"nonfinite", "rate_limited"}


def test_gripper_is_not_rate_limited_but_arm_elements_are() -> None:
    safety = SafetyFilter(SafetyLimits.from_command(card_command("lift"), max_step=0.1, max_step_change=0.05))
    out, flags = safety([1.0] * 6 + [-1.0])
    assert out[6] == -1.0  # the open/close request goes through at once
    assert np.allclose(out[:6], 0.05) and "rate_limited" in flags  # from rest: the change of the change limits
    out, _ = safety([1.0] * 6 + [1.0])
    assert out[6] == 1.0 and np.allclose(out[:6], 0.15)


def test_huge_target_ramps_up_and_stops_exactly_at_the_bound_as_the_saturation_limiter_does() -> None:
    """Position/velocity/acceleration as ros2_control's JointSaturationLimiter: the speed ramps by max_step_change,
    caps at max_step, and drops in time to stop at the bound without passing it."""
    command = {"names": ["joint0"], "low": [-1.0], "high": [1.0], "hold": [0.0], "meaning": "joint_position",
               "sticky": []}
    safety = SafetyFilter(SafetyLimits.from_command(command, max_step=0.1, max_step_change=0.03))
    positions = [safety([1e300])[0][0] for _ in range(40)]
    speeds = np.diff([0.0, *positions])
    assert np.allclose(speeds[:3], [0.03, 0.06, 0.09]) and np.isclose(speeds.max(), 0.1)
    assert positions[-1] == 1.0 and max(positions) <= 1.0
    braking = int(np.flatnonzero(np.isclose(speeds, 0.1))[-1])
    assert np.all(np.diff(speeds[braking:]) <= 1e-12)  # never speeds up again once braking starts


@PROPERTY
@given(start=st.floats(-1.0, 1.0), target=st.floats(-1.0, 1.0), max_step=st.one_of(st.none(), st.floats(0.02, 2.0)),
       max_step_change=st.floats(0.01, 2.0))
def test_a_steady_command_is_approached_without_overshoot_and_reached(start, target, max_step, max_step_change) -> None:
    command = {"names": ["joint0"], "low": [-1.0], "high": [1.0], "hold": [0.0], "meaning": "joint_position",
               "sticky": []}
    safety = SafetyFilter(SafetyLimits.from_command(command, max_step=max_step, max_step_change=max_step_change))
    safety.reset([start])
    outputs = [safety([target])[0][0] for _ in range(300)]  # 2 units at 0.02 a step: 100
    assert all(min(start, target) - TOL <= out <= max(start, target) + TOL for out in outputs)
    assert np.all(np.sign(target - start) * np.diff([start, *outputs]) >= -TOL)  # monotonic toward the target
    assert outputs[-1] == pytest.approx(target, abs=1e-9)


def test_hold_is_immediate_and_restarts_the_change_limits_from_rest() -> None:
    safety = SafetyFilter(SafetyLimits.from_command(card_command("reach2d"), max_step=0.2, max_step_change=0.1))
    for _ in range(10):
        safety([1.0, 1.0])
    assert safety.hold().tolist() == [0.0, 0.0]
    out, _ = safety([1.0, 1.0])
    assert np.allclose(out, 0.1)  # from rest again, not at the previous speed
    safety.reset([0.5, 0.5])
    out, _ = safety([-1.0, -1.0])
    assert np.allclose(out, 0.4)


def test_workspace_needs_the_metres_per_unit_and_end_effector_elements() -> None:
    with pytest.raises(DeployError, match="eef_step_m"):
        SafetyLimits.from_command(card_command("lift"), workspace_low=[-1] * 3, workspace_high=[1] * 3)
    joint = {"names": ["joint0"], "low": [-1.0], "high": [1.0], "hold": [0.0], "meaning": "joint_position"}
    with pytest.raises(DeployError, match="dx, dy, dz"):
        SafetyLimits.from_command(joint, workspace_low=[-1], workspace_high=[1])
    with pytest.raises(DeployError, match="workspace_low"):
        SafetyLimits.from_command(card_command("reach2d"), workspace_low=[-1, -1, -1], workspace_high=[1, 1, 1])
    with pytest.raises(DeployError, match="max_step must be > 0"):
        SafetyLimits.from_command(card_command("reach2d"), max_step=0.0)


def test_wrong_command_size_is_one_line_naming_the_elements() -> None:
    safety = SafetyFilter(SafetyLimits.from_command(card_command("reach2d")))
    with pytest.raises(DeployError, match=r"3 command values, the robot takes 2 \(dx, dy\)"):
        safety([0.0, 0.0, 0.0])
