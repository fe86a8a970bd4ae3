"""What the algorithm tests share: a 3-number state, a 2-element action, algorithms with 8-unit networks, and a
hand-made batch of six transitions (one of them a 2-step transition, two terminal)."""

from __future__ import annotations

import dataclasses

import torch

from robot_stack.learn.algorithms import algorithm_class
from robot_stack.learn.algorithms.base import Algorithm
from robot_stack.learn.config import load_config
from robot_stack.learn.observations import ObservationSpec
from robot_stack.learn.replay import Batch

BATCH, ACTION_DIM = 6, 2


def tiny_spec() -> ObservationSpec:
    return ObservationSpec(state={"x": [3]}, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
                           action_low=[-1.0, -1.0], action_high=[1.0, 1.0])


def make_algorithm(algo: str, seed: int = 0, **algorithm: object) -> Algorithm:
    """`algo` with its defaults and `algorithm` overrides, 8-unit networks, on the CPU, weights drawn from `seed`."""
    overrides = {f"algorithm.{key}": value for key, value in algorithm.items()}
    config = load_config(algo, overrides=overrides, steps=10, device="cpu", hidden_dims=[8, 8])
    torch.manual_seed(seed)
    return algorithm_class(algo)(tiny_spec(), config, torch.device("cpu"))


def tiny_batch(seed: int = 0, return_to_go: list[float] | None = None) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    batch = Batch(
        obs={"state": torch.randn(BATCH, 3, generator=generator)},
        action=torch.rand(BATCH, ACTION_DIM, generator=generator) * 2 - 1,
        reward=torch.randn(BATCH, generator=generator),
        next_obs={"state": torch.randn(BATCH, 3, generator=generator)},
        discount=torch.tensor([0.99, 0.99, 0.99, 0.9801, 0.99, 0.99]),  # one 2-step transition
        terminal=torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
    )
    return batch if return_to_go is None else dataclasses.replace(batch, return_to_go=torch.tensor(return_to_go))
