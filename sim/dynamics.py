"""Dynamics variants: named presets and keyword overrides that change how a sim task behaves.

A variant changes the model (gravity, friction, object mass, actuator gain) and
the signal path (action noise and delay, observation noise). ``sim`` and
``real`` form a pair with a measurable dynamics gap for hybrid sim-real
training: ``real`` is the stand-in for the hardware, ``sim`` the simulator
one trains against.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.errors import SimError


@dataclass(frozen=True)
class Dynamics:
    """Multipliers are relative to the task's nominal model; noise is a standard deviation."""

    gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)  # m/s^2
    friction_scale: float = 1.0  # sliding friction of every geom
    object_mass_scale: float = 1.0  # mass of the manipulated object(s)
    actuator_gain: float = 1.0  # scales the force/torque every actuator applies
    action_noise: float = 0.0  # added to each command element, in command units
    action_delay: int = 0  # control steps between a command and its effect
    observation_noise: float = 0.0  # added to low-dim observations, in their units

    def replace(self, **overrides: Any) -> "Dynamics":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SimError(f"unknown dynamics override(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "gravity" in overrides:
            overrides["gravity"] = tuple(float(g) for g in overrides["gravity"])
            if len(overrides["gravity"]) != 3:
                raise SimError("dynamics override gravity needs 3 values (x, y, z) in m/s^2")
        if "action_delay" in overrides:
            overrides["action_delay"] = int(overrides["action_delay"])
        variant = dataclasses.replace(self, **overrides)
        for name in ("friction_scale", "object_mass_scale", "actuator_gain"):
            if not getattr(variant, name) > 0:
                raise SimError(f"dynamics {name} must be > 0, got {getattr(variant, name)}")
        if variant.action_noise < 0 or variant.observation_noise < 0 or variant.action_delay < 0:
            raise SimError("dynamics noise levels and action_delay must be >= 0")
        return variant

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Dynamics] = {
    "nominal": Dynamics(),
    # The simulator a policy is trained against: nominal physics, ideal signals.
    "sim": Dynamics(),
    # The hardware stand-in: softer actuation, slipperier and heavier object, a step of latency, noise.
    "real": Dynamics(friction_scale=0.6, object_mass_scale=1.8, actuator_gain=0.75, action_noise=0.05,
                     action_delay=1, observation_noise=0.002),
    "low_friction": Dynamics(friction_scale=0.3),
    "heavy_object": Dynamics(object_mass_scale=3.0),
    "weak_actuators": Dynamics(actuator_gain=0.5),
    "laggy": Dynamics(action_delay=2),
    "noisy": Dynamics(action_noise=0.1, observation_noise=0.01),
    "moon": Dynamics(gravity=(0.0, 0.0, -1.62)),
}


def make_dynamics(preset: str | Dynamics = "nominal", **overrides: Any) -> Dynamics:
    """A preset by name (or a Dynamics), with keyword overrides applied."""
    if isinstance(preset, Dynamics):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise SimError(f"unknown dynamics preset {preset!r}; presets: {', '.join(PRESETS)}")
    return base.replace(**overrides) if overrides else base


@dataclass
class NominalModel:
    """The model values a variant scales, captured once from the unmodified MuJoCo model."""

    friction: np.ndarray
    body_mass: np.ndarray
    body_inertia: np.ndarray
    actuator_gear: np.ndarray
    object_bodies: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @classmethod
    def capture(cls, model, object_bodies: list[int]) -> "NominalModel":
        return cls(model.geom_friction.copy(), model.body_mass.copy(), model.body_inertia.copy(),
                   model.actuator_gear.copy(), np.asarray(object_bodies, int))


def apply_to_model(model, nominal: NominalModel, dynamics: Dynamics) -> None:
    """Write a variant's physics into a MuJoCo model (idempotent: always from the nominal values)."""
    model.opt.gravity[:] = dynamics.gravity
    model.geom_friction[:] = nominal.friction
    model.geom_friction[:, 0] = nominal.friction[:, 0] * dynamics.friction_scale
    model.body_mass[:] = nominal.body_mass
    model.body_inertia[:] = nominal.body_inertia
    if nominal.object_bodies.size:
        model.body_mass[nominal.object_bodies] *= dynamics.object_mass_scale
        model.body_inertia[nominal.object_bodies] *= dynamics.object_mass_scale
    model.actuator_gear[:] = nominal.actuator_gear
    model.actuator_gear[:, 0] *= dynamics.actuator_gain


class CommandChannel:
    """The path from a command to the actuators: delay (in control steps), then additive noise."""

    def __init__(self, dynamics: Dynamics, command_dim: int, rng: np.random.Generator) -> None:
        self.dynamics = dynamics
        self.rng = rng
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._hold = np.zeros(command_dim)

    def reset(self, hold: np.ndarray) -> None:
        """Empty the delay line; until it fills, the actuators get ``hold`` (e.g. zero motion)."""
        self._queue.clear()
        self._hold = np.asarray(hold, dtype=float).copy()

    def __call__(self, command: np.ndarray) -> np.ndarray:
        self._queue.append(np.asarray(command, dtype=float).copy())
        applied = self._queue.popleft() if len(self._queue) > self.dynamics.action_delay else self._hold
        if self.dynamics.action_noise:
            applied = applied + self.rng.normal(0.0, self.dynamics.action_noise, applied.shape)
        return applied
