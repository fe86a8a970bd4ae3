"""Gymnasium envs over the sim tasks: observations are exactly ``SimTask.observe()``.

Registered ids are made available by ``register_envs()``, which ``robot_stack.sim`` calls on import as
gymnasium users expect. ``ENV_IDS`` name one task each:
``gymnasium.make("RobotStack/Lift-v0", dynamics="real", cameras=["agentview"])``. ``TASK_ENV_ID``
takes the task as an argument, for code that reads it from data (a dataset's ``robot["sim_task"]``);
the ``module:`` prefix makes gymnasium import the sim, so the caller need not:
``gymnasium.make("robot_stack.sim:RobotStack/Task-v0", task="reach2d", cameras=["top:64x64"])``.
Other keyword arguments go to ``make_task`` (cameras, control_hz, horizon, dynamics, seed).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from robot_stack.errors import SimError
from robot_stack.sim.task import TASKS, SimTask, make_task

ENV_IDS: dict[str, str] = {
    "RobotStack/Lift-v0": "lift",
    "RobotStack/Reach2D-v0": "reach2d",
}
TASK_ENV_ID = "RobotStack/Task-v0"
"""Any task, named by the ``task=`` keyword (required)."""


class SimTaskEnv(gymnasium.Env):
    """One task episode per gymnasium episode.

    ``step`` returns reward = the task's dense ground-truth reward, ``terminated`` =
    success when ``terminate_on_success`` (default False: episodes run to the
    horizon, success is in ``info``), ``truncated`` at the horizon.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str | SimTask | None = None, *, terminate_on_success: bool = False,
                 render_mode: str | None = None, **task_kwargs: Any) -> None:
        if task is None:
            raise SimError(f"{TASK_ENV_ID} needs the task: gymnasium.make('robot_stack.sim:{TASK_ENV_ID}', "
                           f"task=NAME), NAME one of {', '.join(TASKS)}")
        self.task = make_task(task, **task_kwargs) if isinstance(task, str) else task
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        spec = self.task.command_spec
        self.action_space = spaces.Box(np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32))
        self.task.reset(self.task.config.seed)
        self.observation_space = spaces.Dict({key: _space(value) for key, value in self.task.observe().items()})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        self.task.reset(seed)
        return self.task.observe(), {"success": self.task.success(), "seed": seed}

    def step(self, action):
        self.task.step(self.task.command_spec.validate(action))
        success = self.task.success()
        observation = self.task.observe()
        terminated = bool(success and self.terminate_on_success)
        return observation, float(self.task.reward()), terminated, self.task.done, {"success": success}

    def render(self):
        images = [v for k, v in self.task.observe().items() if k.startswith("image/")]
        return images[0] if images else None

    def close(self) -> None:
        self.task.close()


def _space(value: np.ndarray) -> spaces.Space:
    if value.dtype == np.uint8:
        return spaces.Box(0, 255, value.shape, np.uint8)
    return spaces.Box(-np.inf, np.inf, value.shape, np.float64)


def register_envs() -> None:
    """Register every id of ENV_IDS and TASK_ENV_ID with gymnasium (idempotent)."""
    for env_id, task_name in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=SimTaskEnv, kwargs={"task": task_name})
    if TASK_ENV_ID not in gymnasium.registry:
        gymnasium.register(TASK_ENV_ID, entry_point=SimTaskEnv)
