"""Many training runs at once (seeds, algorithms, configs): one after another in this process, or in parallel over
Ray (`engine="ray"`): a local Ray on 127.0.0.1 started for the sweep, or a running cluster at `address`
(robot_stack.cluster). ARCHITECTURE.md "Scaling out": training sweeps run seeds and configs.

Each run is a whole TrainConfig with its own run folder (`out`), so a sweep's results are ordinary run folders;
a run that fails does not stop the others: its row says why, and the sweep reports how many did not finish.
On a cluster every worker must see the datasets (and write the run folders) at the same paths as this machine.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from robot_stack.errors import LearnError, RobotStackError
from robot_stack.learn.config import TrainConfig, config_from_dict

if TYPE_CHECKING:
    from robot_stack.learn.online import LabelModels

ENGINES = ("local", "ray")


def train_one(config: dict[str, Any], threads: int = 0, label_models: LabelModels | None = None) -> dict[str, Any]:
    """Train one run from a TrainConfig's to_dict(); its result.json row, or {"error": one line} if it failed.
    label_models: for online runs on a labels/<run> reward (learn.online.OnlineRun's; label sits above learn)."""
    import torch

    from robot_stack.learn.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)  # one core per Ray worker: the workers share the machine
    try:
        train = config_from_dict(config)
        if train.online == "robot":
            raise LearnError("a sweep runs sim targets only: the robot target trains against one robot, "
                             "run it with robot-stack train --online robot")
        trainer = Trainer(train, progress=False, log=lambda text: None)
        if train.online:
            from robot_stack.learn.online import run_online

            return run_online(trainer, progress=False, label_models=label_models)
        return trainer.run()
    except RobotStackError as error:
        return {"error": str(error), "out": config.get("out", "")}
    except Exception as error:  # noqa: BLE001  (one run's crash is its row, not the sweep's end)
        last = traceback.format_exception_only(error)[-1].strip()
        return {"error": f"crashed: {last}", "out": config.get("out", "")}


def run_sweep(configs: list[TrainConfig], *, engine: str = "local", address: str = "", workers: int | None = None,
              on_result: Callable[[int, dict[str, Any]], None] | None = None, progress: bool = True,
              label_models: LabelModels | None = None) -> list[dict[str, Any]]:
    """Train every config; results in the configs' order (a failed run's row has "error"). on_result(i, row) is
    called as each run finishes (in finishing order). engine "local": one after another here; "ray": one run per
    Ray worker (1 CPU each; `workers` caps how many at once, default the cluster's CPUs)."""
    if engine not in ENGINES:
        raise LearnError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "local" and address:
        raise LearnError("--address goes with --engine ray")
    names = [config.out for config in configs]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise LearnError("every run of a sweep needs its own run folder (config.out)")
    from tqdm import tqdm

    results: list[dict[str, Any] | None] = [None] * len(configs)
    bar = tqdm(total=len(configs), desc=f"sweep ({engine})", unit="run", disable=not progress, file=sys.stderr)

    def finished(index: int, row: dict[str, Any]) -> None:
        results[index] = row
        bar.update(1)
        if on_result:
            on_result(index, row)

    if engine == "local":
        for index, config in enumerate(configs):
            finished(index, train_one(config.to_dict(), label_models=label_models))
    else:
        _ray_sweep(configs, address, workers, finished, label_models)
    bar.close()
    return [row or {"error": "no result"} for row in results]


def _ray_sweep(configs: list[TrainConfig], address: str, workers: int | None,
               finished: Callable[[int, dict[str, Any]], None], label_models: LabelModels | None) -> None:
    from robot_stack import cluster

    ray = cluster.import_ray(LearnError, "run the sweep with --engine local")
    if address:
        cluster.check_address(address, LearnError)
    with cluster.ray_session(ray, address, workers, LearnError):
        available = max(1, int(ray.cluster_resources().get("CPU", 1)))
        at_once = min(workers or available, available, len(configs))
        remote = ray.remote(num_cpus=1, max_retries=0)(train_one)
        pending: dict[Any, int] = {}
        queue = list(enumerate(configs))
        while queue or pending:
            while queue and len(pending) < at_once:
                index, config = queue.pop(0)
                pending[remote.remote(config.to_dict(), 1, label_models)] = index
            done, _ = ray.wait(list(pending), num_returns=1)
            for reference in done:
                index = pending.pop(reference)
                try:
                    row = ray.get(reference)
                except ray.exceptions.RayError as error:  # a worker lost (killed, out of memory)
                    row = {"error": f"the Ray worker was lost ({type(error).__name__})", "out": configs[index].out}
                finished(index, row)
