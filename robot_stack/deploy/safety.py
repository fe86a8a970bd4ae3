"""The safety filter between a model's command and ``/robot/command``: bounds, per-step change limits, a
workspace box for the end effector, and a hold command for a model output that is not a number.

Each command element is limited as ros2_control's ``joint_limits::JointSaturationLimiter`` limits a joint's
position, velocity and acceleration (reimplemented from its documented behaviour, not its code): the element's
value plays the position (clamped to the command bounds), its change per control step the velocity
(``max_step``) and the change of that change per step the acceleration (``max_step_change``); as there,
"if a joint is close to its position limit, velocity and acceleration will be reduced accordingly": the change is
capped so that, decelerating by ``max_step_change`` a step, the element stops at its bound rather than past it, so
all three limits hold together on every step. The same cap toward the model's command (beyond a pure saturation)
makes the output settle on it instead of overshooting it. The units are the command's own, per control step.

Decisions (docs/deploy.md, "Runtime and safety filter"):

- A command with NaN or Inf in any element is not trusted at all: the step's target becomes the hold command
  (sticky elements keep their last value), reached as fast as the limits allow. ``hold()`` is the immediate hold
  that ignores the limits (e-stop, stale observation).
- Sticky elements (a gripper: the card's ``command.sticky``) are clipped to their bounds but not rate limited: a
  gripper command is an open/close request (lift's gripper integrates its sign), and slowing it down only delays
  the request without making the motion gentler.
- The workspace box applies to end-effector delta commands: element ``dx``/``dy``/``dz`` moves the end effector
  along x/y/z by ``value * eef_step_m`` metres in one control step. ``eef_step_m`` comes from the command meaning
  ("1.0 = 0.02 m", as reach2d's says) or is given (lift's meaning does not say: robosuite's OSC sets the target
  0.05 m away for 1.0). The box is a hard limit and takes precedence over the change limits on the step it cuts a
  command. Out of the box (pushed there), a command may only move back toward it. Without an end-effector
  position the moving elements hold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.errors import DeployError

AXES = {"dx": 0, "dy": 1, "dz": 2}  # end-effector delta element name -> axis of the workspace box (x, y, z)
STEP_METRES = re.compile(r"1(?:\.0*)?\s*=\s*([0-9.eE+-]+)\s*m\b")  # "1.0 = 0.02 m" in a command meaning


@dataclass(frozen=True)
class SafetyLimits:
    """What the filter enforces; arrays are float64 [A] in command units (per control step for the changes).

    ``max_step``/``max_step_change``: inf where unlimited. ``sticky``: indices of elements exempt from the change
    limits. ``eef_elements``: element index -> axis index into the end-effector position; ``eef_step_m``: metres
    the end effector moves for 1.0 of such an element in one step; ``workspace_low``/``workspace_high``: float64
    [len(eef_elements)] metres, in the order of ``eef_elements``, or None for no box.
    """

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    hold: np.ndarray
    sticky: tuple[int, ...] = ()
    max_step: np.ndarray = field(default=None)  # type: ignore[assignment]
    max_step_change: np.ndarray = field(default=None)  # type: ignore[assignment]
    eef_elements: dict[int, int] = field(default_factory=dict)
    eef_step_m: float | None = None
    workspace_low: np.ndarray | None = None
    workspace_high: np.ndarray | None = None

    def __post_init__(self) -> None:
        size = len(self.names)
        for name in ("low", "high", "hold"):
            object.__setattr__(self, name, _vector(getattr(self, name), size, name))
        for name in ("max_step", "max_step_change"):
            value = getattr(self, name)
            vector = _vector(math.inf if value is None else value, size, name)
            if np.any(~(vector > 0)):
                raise DeployError(f"safety limit {name} must be > 0 for every command element, got {vector.tolist()}")
            object.__setattr__(self, name, vector)
        if np.any(~(self.low <= self.high)):
            raise DeployError(f"command bounds are not ordered: low {self.low.tolist()}, high {self.high.tolist()}")
        if np.any((self.hold < self.low) | (self.hold > self.high)):
            raise DeployError(f"the hold command {self.hold.tolist()} is outside the command bounds "
                              f"{self.low.tolist()} .. {self.high.tolist()}: the model card is damaged")
        if self.workspace_low is not None or self.workspace_high is not None:
            self._check_workspace()

    def _check_workspace(self) -> None:
        axes = len(self.eef_elements)
        if not axes:
            raise DeployError(f"a workspace box needs end-effector delta commands (elements named dx, dy, dz); this "
                              f"robot's command elements are {', '.join(self.names)}: leave workspace_low/high unset")
        if self.workspace_low is None or self.workspace_high is None:
            raise DeployError("give both workspace_low and workspace_high (metres), or neither")
        low = _vector(self.workspace_low, axes, "workspace_low")
        high = _vector(self.workspace_high, axes, "workspace_high")
        if np.any(~(low < high)):
            raise DeployError(f"workspace_low {low.tolist()} must be below workspace_high {high.tolist()} on every axis")
        if not (self.eef_step_m is not None and self.eef_step_m > 0):
            raise DeployError("the command meaning does not say how far 1.0 moves the end effector in a step: give "
                              "eef_step_m (metres per unit) with the workspace box")
        if np.any(self.hold[list(self.eef_elements)] != 0):
            raise DeployError("the hold command moves the end effector (nonzero dx/dy/dz): a workspace box cannot "
                              "be kept for this command")
        object.__setattr__(self, "workspace_low", low)
        object.__setattr__(self, "workspace_high", high)

    @property
    def has_workspace(self) -> bool:
        return self.workspace_low is not None

    @classmethod
    def from_command(cls, command: dict[str, Any], *, max_step: Any = None, max_step_change: Any = None,
                     workspace_low: Any = None, workspace_high: Any = None,
                     eef_step_m: float | None = None) -> SafetyLimits:
        """Limits from a model card's ``command`` ({names, low, high, hold, meaning, sticky: [names]}) and the
        node's safety parameters; ``eef_step_m`` None: read from the meaning ("1.0 = 0.02 m") when it says."""
        names = tuple(command["names"])
        if command.get("hold") is None:
            raise DeployError(f"the model card's command ({', '.join(names)}) has no hold command, which the policy "
                              "sends when it must stop: give the robot's command a hold: in its features file, then "
                              "record and export again")
        unknown = [name for name in command.get("sticky") or [] if name not in names]
        if unknown:
            raise DeployError(f"the model card's sticky command elements {unknown} are not among its command "
                              f"elements {list(names)}: the card is damaged")
        sticky = tuple(names.index(name) for name in command.get("sticky") or [])
        eef_elements = {i: AXES[name] for i, name in enumerate(names) if name in AXES and i not in sticky}
        if eef_step_m is None and eef_elements:
            found = STEP_METRES.search(str(command.get("meaning", "")))
            eef_step_m = float(found.group(1)) if found else None
        return cls(names, command["low"], command["high"], command["hold"], sticky, max_step, max_step_change,
                   eef_elements, eef_step_m, workspace_low, workspace_high)

    @classmethod
    def from_card(cls, card: Any, **params: Any) -> SafetyLimits:
        """``from_command(card.command, **params)`` for a ModelCard (robot_stack.deploy.card)."""
        return cls.from_command(card.command, **params)


class SafetyFilter:
    """Turns a model's raw command into one that is safe to publish; keeps the last two outputs as its memory.

    ``filter(raw, eef_position)`` -> (command float64 [A], flags): the command is always finite, within the bounds,
    within ``max_step`` of the previous output and ``max_step_change`` of the previous change on every non-sticky
    element (unless the workspace box cut it on this step, flagged "workspace"), and moves the end effector no
    further out of the box. flags: a subset of {"clipped", "rate_limited", "workspace", "nonfinite"}.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        moving = np.ones(len(limits.names), bool)
        moving[list(limits.sticky)] = False
        self._moving = moving
        self._eef = np.array(sorted(limits.eef_elements), int)
        self._eef_axes = np.array([limits.eef_elements[i] for i in self._eef], int)
        self.reset(limits.hold)

    def reset(self, last_command: Any) -> None:
        """Start from ``last_command`` at rest (after a hold or a model swap): the next change is limited from it."""
        last = np.asarray(last_command, np.float64).reshape(-1)
        if last.shape != self.limits.low.shape or not np.all(np.isfinite(last)):
            last = self.limits.hold
        self._last = np.clip(last, self.limits.low, self.limits.high)
        self._last_change = np.zeros_like(self._last)

    def hold(self) -> np.ndarray:
        """The hold command now (sticky elements keep their last value), with the memory reset to it."""
        hold = self._hold_target()
        self.reset(hold)
        return hold.copy()

    def __call__(self, raw_command: Any, eef_position: Any = None) -> tuple[np.ndarray, set[str]]:
        """raw_command: the model's command [A] (any values); eef_position: the end effector's measured position
        [m], x, y[, z] (needed with a workspace box)."""
        limits, flags = self.limits, set()
        target = np.asarray(raw_command, np.float64).reshape(-1)
        if target.shape != limits.low.shape:
            raise DeployError(f"the model gave {target.size} command values, the robot takes {limits.low.size} "
                              f"({', '.join(limits.names)})")
        if not np.all(np.isfinite(target)):
            flags.add("nonfinite")
            target = self._hold_target()
        clipped = np.clip(target, limits.low, limits.high)
        if np.any(clipped != target):
            flags.add("clipped")
        change = self._limit_change(clipped - self._last)
        # Clipped again: last + (target - last) can round past a bound.
        command = np.where(self._moving, np.clip(self._last + change, limits.low, limits.high), clipped)
        if np.any(np.abs(command - clipped) > 1e-12 * (1.0 + np.abs(clipped))):
            flags.add("rate_limited")
        if limits.has_workspace:
            low, high = self._workspace_interval(eef_position)
            kept = np.clip(command[self._eef], low, high)
            if np.any(kept != command[self._eef]):
                flags.add("workspace")
                command[self._eef] = kept
        self._last_change = np.where(self._moving, command - self._last, 0.0)
        self._last = command
        return command.copy(), flags

    def _hold_target(self) -> np.ndarray:
        return np.where(self._moving, self.limits.hold, self._last)

    def _limit_change(self, wanted: np.ndarray) -> np.ndarray:
        """The change for this step, clamped in order of rising priority so that, where all the intervals meet,
        the result is in all of them: the stopping distance to the target (so the command settles on the model's
        command instead of overshooting it, where the acceleration allows), acceleration, then velocity (with the
        stopping distance to the bounds), then position."""
        limits, last = self.limits, self._last
        accel, speed = limits.max_step_change, limits.max_step
        change = np.sign(wanted) * np.minimum(np.abs(wanted), _stoppable(np.abs(wanted), accel))
        change = np.clip(change, self._last_change - accel, self._last_change + accel)
        up = np.minimum(speed, _stoppable(limits.high - last, accel))
        down = np.minimum(speed, _stoppable(last - limits.low, accel))
        change = np.clip(change, -down, up)
        return np.clip(change, limits.low - last, limits.high - last)

    def _workspace_interval(self, eef_position: Any) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the end-effector delta elements [units] that keep the end effector in the box, or move it
        no further out; both 0 (hold) without a finite position."""
        limits = self.limits
        position = None if eef_position is None else np.asarray(eef_position, np.float64).reshape(-1)
        if position is None or position.size <= self._eef_axes.max() or not np.all(np.isfinite(position)):
            zero = np.zeros(len(self._eef))
            return zero, zero
        here = position[self._eef_axes]
        low = np.minimum((limits.workspace_low - here) / limits.eef_step_m, 0.0)
        high = np.maximum((limits.workspace_high - here) / limits.eef_step_m, 0.0)
        return low, high


def _stoppable(room: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """The largest change per step from which decelerating by ``accel`` a step stops within ``room``.

    A change d followed by d - a, d - 2a, ... covers (n + 1) d - a n (n + 1) / 2 with n = floor(d / a); solved for
    d: n = the largest integer with a n (n + 1) / 2 <= room, d = room / (n + 1) + a n / 2. inf where accel is.
    """
    room = np.maximum(room, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.floor((np.sqrt(1.0 + 8.0 * room / accel) - 1.0) / 2.0)
        n = np.where(accel * (n + 1) * (n + 2) / 2 <= room, n + 1, n)  # the square root's rounding, either way
        n = np.where(accel * n * (n + 1) / 2 > room, n - 1, n)
        stop = room / (n + 1) + accel * n / 2
    return np.where(np.isfinite(accel), stop, np.inf)


def _vector(value: Any, size: int, name: str) -> np.ndarray:
    """A float64 [size] from a scalar or a list of ``size`` numbers; DeployError names the parameter."""
    try:
        array = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DeployError(f"safety parameter {name} must be a number or a list of {size} numbers, got {value!r}") from None
    if array.size == 1:
        array = np.full(size, array[0])
    if array.size != size or np.any(np.isnan(array)):
        raise DeployError(f"safety parameter {name} must be a number or a list of {size} numbers, got {value!r}")
    return array
