"""What every algorithm is to the trainer: modules and optimizers, one update per batch, a deterministic actor.

``update(batch, update_actor)`` returns its losses as device tensors (never .item(): the trainer reads
them every log_every steps). Algorithms whose actor updates less often than the critic (TD3's delayed
policy update) set ``actor_every``; the trainer passes update_actor accordingly, so a compiled update
or a captured CUDA graph has one fixed shape per value of the flag.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robot_stack.learn.config import TrainConfig
from robot_stack.learn.encoders import ObservationEncoder
from robot_stack.learn.observations import ObservationSpec
from robot_stack.learn.replay import Batch


def adam(parameters: Any, lr: float, device: torch.device, compiled: bool = False) -> torch.optim.Adam:
    """Adam that can live inside a CUDA graph on CUDA (capturable, learning rate held in a tensor).

    Compiled on the CPU, the learning rate is a tensor too: a schedule then changes a value, not a
    constant baked into the compiled step (which would recompile it every step).
    """
    parameters = list(parameters)
    if device.type == "cuda":
        return torch.optim.Adam(parameters, lr=torch.tensor(lr, device=device), capturable=True, foreach=True)
    if compiled:
        return torch.optim.Adam(parameters, lr=torch.tensor(lr), foreach=False)
    return torch.optim.Adam(parameters, lr=lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Change the learning rate without recompiling a compiled step (in place when it is a tensor)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Algorithm:
    """Base of the algorithms: builds the observation encoder; saves and loads every module and optimizer."""

    name = ""
    actor_every = 1

    def __init__(self, spec: ObservationSpec, config: TrainConfig, device: torch.device) -> None:
        self.spec, self.train_config, self.config = spec, config, config.algorithm
        self.device = torch.device(device)
        self.hidden_dims = list(config.hidden_dims)
        self.action_dim = spec.action_dim
        image_shapes = {name: tuple(shape) for name, shape in spec.images.items()}
        self.encoder = ObservationEncoder(spec.state_dim, image_shapes).to(self.device)
        self.obs_dim = self.encoder.out_dim
        self.actor: nn.Module

    def adam(self, parameters: Any, lr: float) -> torch.optim.Adam:
        """An Adam for this algorithm's device and compile setting (see the module function)."""
        return adam(parameters, lr, self.device, compiled=self.train_config.compile == "on")

    def encode(self, obs: dict[str, Tensor], augment: bool = True) -> Tensor:
        """Observation tensors -> the features the networks take, [B, obs_dim] (random shift on images)."""
        return self.encoder(obs, augment=augment)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: dict[str, Tensor]) -> Tensor:
        """Deterministic actions [B, A] in [-1, 1]."""
        return self.actor(self.encode(obs, augment=False))

    @torch.no_grad()
    def explore(self, obs: dict[str, Tensor]) -> Tensor:
        """Stochastic actions [B, A] in [-1, 1] that collect online data; default: act (the algorithms with a
        stochastic policy sample it, the deterministic ones add noise)."""
        return self.act(obs)

    def start_online(self) -> None:
        """Called once by the trainer at the offline -> online switch, and again when a resumed run lands in the
        online phase (so it must be idempotent). Changes what update() computes through tensors it reads, never a
        Python branch, so a compiled step or captured CUDA graph stays valid. Default: nothing."""

    def schedule(self, step: int, total_steps: int) -> None:
        """Called by the trainer before step `step` (learning-rate schedules); default: nothing."""

    def train(self, mode: bool = True) -> None:
        for module in self._modules().values():
            module.train(mode)

    def _modules(self) -> dict[str, nn.Module]:
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.optim.Optimizer)}

    def state_dict(self) -> dict[str, Any]:
        return {"modules": {k: m.state_dict() for k, m in self._modules().items()},
                "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, module in self._modules().items():
            module.load_state_dict(state["modules"][key])
        for key, optimizer in self._optimizers().items():
            lr = [group["lr"] for group in optimizer.param_groups]
            optimizer.load_state_dict(state["optimizers"][key])
            for group, value in zip(optimizer.param_groups, lr):
                if isinstance(value, Tensor):  # keep the tensor a compiled step holds; copy the saved value in
                    value.copy_(torch.as_tensor(group["lr"]))
                    group["lr"] = value
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Tensors that are neither module parameters nor optimizer state (CQL's log_alpha lives in a module)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


EXPLORATION_NOISE = 0.1
"""Std of the Gaussian noise added to a deterministic actor's action to explore, in [-1, 1] units (TD3's, Fujimoto
et al. 2018)."""


def with_exploration_noise(action: Tensor, std: float = EXPLORATION_NOISE) -> Tensor:
    """action [B, A] + N(0, std^2) noise, clipped to [-1, 1]."""
    return (action + std * torch.randn_like(action)).clamp(-1.0, 1.0)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a deep copy that takes no gradients."""
    import copy

    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target
