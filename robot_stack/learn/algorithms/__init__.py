"""The algorithms, one module each (its update reads top to bottom next to its paper), and the table naming them."""

from __future__ import annotations

import importlib

from robot_stack.errors import LearnError

# Algorithm name -> "module:Class"; registered here explicitly, imported on first use.
ALGORITHMS: dict[str, str] = {
    "bc": "robot_stack.learn.algorithms.bc:BC",
    "td3bc": "robot_stack.learn.algorithms.td3bc:TD3BC",
    "iql": "robot_stack.learn.algorithms.iql:IQL",
    "cql": "robot_stack.learn.algorithms.cql:CQL",
    "sac": "robot_stack.learn.algorithms.sac:SAC",
    "calql": "robot_stack.learn.algorithms.cql:CQL",  # CQL with calibrated: true (CalQLConfig)
    "rlpd": "robot_stack.learn.algorithms.sac:SAC",  # SAC with RLPDConfig's ensemble (+ the trainer's sampling, utd)
    "wsrl": "robot_stack.learn.algorithms.wsrl:WSRL",
    "h2o": "robot_stack.learn.algorithms.h2o:H2O",  # SAC + discriminators, weighted sim TD errors, gap penalty
    "darc": "robot_stack.learn.algorithms.h2o:DARC",  # SAC + the same discriminators, sim rewards corrected
}


def algorithm_class(name: str) -> type:
    if name not in ALGORITHMS:
        raise LearnError(f"unknown algorithm {name!r}; use one of {', '.join(ALGORITHMS)}")
    module_name, class_name = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
