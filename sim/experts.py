"""Scripted experts: per task, a policy that uses the privileged object pose, with a skill knob.

Skill levels: ``expert`` (clean), ``medium`` (noisy commands and occasional random
actions; it sometimes fails), ``random`` (uniform random commands). They drive the
teleop node's scripted source and generate datasets for tests and benchmarks.
"""

from __future__ import annotations

import abc
import importlib

import numpy as np

from robot_stack.errors import SimError
from robot_stack.sim.task import CommandSpec

SKILLS = ("expert", "medium", "random")


class ScriptedExpert(abc.ABC):
    """Maps the task's observation dict to a command; ``skill`` degrades the clean policy."""

    # medium: Gaussian noise on every command element, and with this probability per step a random command.
    medium_noise = 0.3
    medium_random_probability = 0.15

    def __init__(self, command_spec: CommandSpec, skill: str = "expert", seed: int | None = None) -> None:
        if skill not in SKILLS:
            raise SimError(f"unknown expert skill {skill!r}; use one of {', '.join(SKILLS)}")
        self.command_spec = command_spec
        self.skill = skill
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the previous episode (phase machines start over)."""

    @abc.abstractmethod
    def clean_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The expert's command for this observation, inside the command bounds."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        low, high = np.asarray(self.command_spec.low), np.asarray(self.command_spec.high)
        if self.skill == "random":
            return self.rng.uniform(low, high)
        action = np.asarray(self.clean_action(observation), dtype=float)
        if self.skill == "medium":
            if self.rng.random() < self.medium_random_probability:
                action = self.rng.uniform(low, high)
            else:
                action = action + self.rng.normal(0.0, self.medium_noise, action.shape) * (high - low) / 2
        return np.clip(action, low, high)


# Task name -> "module:Class" of its expert; explicit, like the task table.
EXPERTS: dict[str, str] = {
    "lift": "robot_stack.sim.lift:LiftExpert",
    "reach2d": "robot_stack.sim.planar:PlanarReachExpert",
}


def make_expert(task_name: str, command_spec: CommandSpec, skill: str = "expert",
                seed: int | None = None) -> ScriptedExpert:
    if task_name not in EXPERTS:
        raise SimError(f"no scripted expert for task {task_name!r}; experts exist for: {', '.join(EXPERTS)}")
    module_name, class_name = EXPERTS[task_name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(command_spec, skill=skill, seed=seed)
