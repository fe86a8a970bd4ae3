"""What the algorithm tests share: a 3-number state, a 2-element action, algorithms with 8-unit networks, and a
hand-made batch of six transitions (one of them a 2-step transition, two terminal)."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from robot_stack.learn.algorithms import algorithm_class
from robot_stack.learn.algorithms.base import Algorithm
from robot_stack.learn.config import HYBRID_ALGOS, load_config
from robot_stack.learn.networks import QEnsemble
from robot_stack.learn.observations import ObservationSpec
from robot_stack.learn.replay import Batch

BATCH, ACTION_DIM = 6, 2


def tiny_spec() -> ObservationSpec:
    return ObservationSpec(state={"x": [3]}, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
                           action_low=[-1.0, -1.0], action_high=[1.0, 1.0])


def make_algorithm(algo: str, seed: int = 0, **algorithm: object) -> Algorithm:
    """`algo` with its defaults and `algorithm` overrides, 8-unit networks, on the CPU, weights drawn from `seed`."""
    overrides = {f"algorithm.{key}": value for key, value in algorithm.items()}
    hybrid = {"online": "sim:reach2d", "steps": 0} if algo in HYBRID_ALGOS else {"steps": 10}  # h2o, darc: a sim
    config = load_config(algo, overrides=overrides, device="cpu", hidden_dims=[8, 8], **hybrid)
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


def f64(module: nn.Module) -> nn.Module:
    """A float64 copy of the module as it is now (the reference computations' networks)."""
    return copy.deepcopy(module).double().requires_grad_(False)


def member_q(critic: QEnsemble, member: int, obs: Tensor, action: Tensor) -> Tensor:
    """Q_member(s, a) [B] from the member's own weights: linear, then (with layer_norm) LayerNorm with the member's
    gain and bias, then ReLU, each hidden layer; written out, biased variance, eps 1e-5."""
    x = torch.cat([obs, action], dim=-1)
    for index, layer in enumerate(critic.hidden):
        x = x @ layer.weight[member] + layer.bias[member, 0]
        if critic.norms is not None:
            norm = critic.norms[index]
            mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight[member, 0] + norm.bias[member, 0]
        x = torch.relu(x)
    return (x @ critic.out.weight[member] + critic.out.bias[member, 0]).squeeze(-1)


def every_q(critic: QEnsemble, obs: Tensor, action: Tensor) -> Tensor:
    return torch.stack([member_q(critic, i, obs, action) for i in range(critic.ensemble_size)])


def parameters(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]
