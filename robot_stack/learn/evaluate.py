"""Evaluating a policy in the sim: K seeded episodes of the dataset robot's sim task, success rate and return.

robot_stack does not import the sim package (ARCHITECTURE.md's layering); it asks gymnasium for
``robot_stack.sim:RobotStack/Task-v0`` and gymnasium imports the module named before the colon.
An episode runs to the task's horizon; it succeeded if the task reported success at any step (the
scripted experts' benchmark uses the same rule); ``success_at_end`` is whether it still did at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robot_stack.errors import LearnError
from robot_stack.learn.config import HYBRID_ALGOS
from robot_stack.learn.observations import ObservationSpec, env_key

SIM_ENV = "robot_stack.sim:RobotStack/Task-v0"


def sim_task_of(robot: dict[str, Any]) -> str | None:
    """The sim task a dataset's robot stands for (its robot attribute's sim_task), or None for a real robot."""
    task = robot.get("sim_task")
    return str(task) if task else None


def evaluation_dynamics(config: Any, provenance: dict[str, Any]) -> str | None:
    """The dynamics preset a run's evaluations use (TrainConfig.eval_dynamics resolved), None for nominal.

    auto: an online run's sim target preset (sim:TASK:PRESET; it fine-tunes there), except for hybrid sim-real runs
    (robot_stack.learn.config.HYBRID_ALGOS, or eval_dynamics dataset as --sim sets it), which learn for the data's
    dynamics; offline runs likewise. dataset: the preset the dataset was collected in (its provenance), else nominal."""
    value = config.eval_dynamics
    if value == "auto":
        target = config.online.split(":") if config.online.startswith("sim:") else []
        if target and config.algo not in HYBRID_ALGOS:
            return target[2] if len(target) == 3 and target[2] != "nominal" else None
        value = "dataset"
    if value == "dataset":
        value = (provenance.get("sim_collect") or {}).get("dynamics")
    return None if value in (None, "", "nominal") else str(value)


def make_env(task: str, spec: ObservationSpec, **kwargs: Any) -> Any:
    """The gymnasium env of a sim task, with the cameras the policy's images need."""
    import gymnasium

    cameras = [f"{name[len('image.'):]}:{shape[0]}x{shape[1]}" for name, shape in
               {**spec.images, **{k: v.get("shape", [84, 84, 3]) for k, v in spec.embeddings.items()}}.items()]
    try:
        return gymnasium.make(SIM_ENV, task=task, cameras=cameras, **kwargs)
    except ModuleNotFoundError as error:
        raise LearnError(f"evaluating in the sim needs robot_stack's sim extra ({error}): "
                         "pip install 'robot_stack[sim]', or set eval_env: none") from None


class PolicyRunner:
    """Env observation dict -> robot command, through the spec and a batch-of-one `act` ([1, ...] tensors)."""

    def __init__(self, act: Callable[[dict[str, Any]], Any], spec: ObservationSpec, device: Any,
                 embed: Callable[[str, np.ndarray], np.ndarray] | None = None) -> None:
        self.act, self.spec, self.device, self.embed = act, spec, device, embed

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        values = {name: np.asarray(observation[env_key(name)])[None] for name in self.spec.state}
        embeddings = None
        if self.spec.embeddings:
            if self.embed is None:
                raise LearnError("this policy sees CLIP embeddings: give PolicyRunner an embed function")
            embeddings = {name: self.embed(name, np.asarray(observation[env_key(name)])[None]) for name in self.spec.embeddings}
        tensors = {"state": torch.as_tensor(self.spec.state_from(values, embeddings), device=self.device)}
        for name in self.spec.images:
            tensors[name] = torch.as_tensor(np.ascontiguousarray(observation[env_key(name)])[None], device=self.device)
        action = self.act(tensors).float().cpu().numpy()
        return self.spec.unscale(action)[0]


def evaluate(policy: Callable[[dict[str, np.ndarray]], np.ndarray], env: Any, episodes: int, seed: int) -> dict[str, Any]:
    """Run `episodes` episodes (episode i on seed + i) to the horizon; success rate, mean return, per-episode rows."""
    rows = []
    for i in range(episodes):
        observation, info = env.reset(seed=seed + i)
        total, succeeded, done = 0.0, bool(info.get("success", False)), False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            total += float(reward)
            succeeded = succeeded or bool(info.get("success", False))
            done = terminated or truncated
        rows.append({"seed": seed + i, "success": succeeded, "success_at_end": bool(info.get("success", False)),
                     "return": round(total, 4)})
    return {
        "episodes": episodes,
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "success_at_end_rate": float(np.mean([r["success_at_end"] for r in rows])),
        "mean_return": float(np.mean([r["return"] for r in rows])),
        "rows": rows,
    }
