"""Networks the algorithms share: MLPs, a vectorized Q-ensemble, actors, and the target-network update.

Actions are in [-1, 1] (the command bounds are scaled away before learning and put back at export).
The Q-ensemble is one batched module (weights [E, in, out], one bmm per layer), not a loop over critics.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class MLP(nn.Module):
    """in_dim -> hidden (ReLU, optional dropout) -> out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden_dims:
            layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]  # a linear layer's backward needs no output
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied at once: x [E, B, in] -> [E, B, out].

    Each member is initialised like nn.Linear (Kaiming-uniform weights, uniform bias in ±1/sqrt(in)).
    """

    def __init__(self, in_dim: int, out_dim: int, ensemble_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        for member in range(ensemble_size):
            # kaiming_uniform_(a=sqrt(5)) on an [out, in] matrix, as nn.Linear does, then transposed.
            weight = torch.empty(out_dim, in_dim)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.weight.data[member] = weight.T
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, members: int | None = None) -> Tensor:
        """members: use only the first `members` layers (x is then [members, B, in])."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[:members], x, self.weight[:members])


class QEnsemble(nn.Module):
    """E critics Q_e(s, a) in one module: forward(obs [B, D], action [B, A]) -> [E, B]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int], ensemble_size: int = 2) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        dims = [obs_dim + action_dim, *hidden_dims]
        self.hidden = nn.ModuleList(EnsembleLinear(i, o, ensemble_size) for i, o in itertools.pairwise(dims))
        self.out = EnsembleLinear(dims[-1], 1, ensemble_size)

    def forward(self, obs: Tensor, action: Tensor, members: int | None = None) -> Tensor:
        """Q-values [E, B]; with `members`, only the first that many critics are run ([members, B])."""
        x = torch.cat([obs, action], dim=-1)
        x = x.unsqueeze(0).expand(members or self.ensemble_size, *x.shape)
        for layer in self.hidden:
            x = F.relu_(layer(x, members))  # in place: baddbmm's backward needs its inputs, not its output
        return self.out(x, members).squeeze(-1)


class DeterministicActor(nn.Module):
    """pi(s) = tanh(MLP(s)): an action in [-1, 1]^A."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP(obs_dim, action_dim, hidden_dims, dropout)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


class GaussianActor(nn.Module):
    """IQL's policy: N(tanh(MLP(s)), exp(log_std)) with a state-independent log_std; acts with the mean."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int], dropout: float = 0.0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = MLP(obs_dim, action_dim, hidden_dims, dropout)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic action (the mean), [B, A] in [-1, 1]."""
        return torch.tanh(self.net(obs))

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log pi(a|s) summed over action dimensions, [B]."""
        mean = torch.tanh(self.net(obs))
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return (-0.5 * ((action - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC's policy (CQL's actor): a = tanh(u), u ~ N(mu(s), sigma(s)); acts with tanh(mu)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int],
                 log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 2 * action_dim, hidden_dims)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> Tensor:
        mean, _ = self.net(obs).chunk(2, dim=-1)
        return torch.tanh(mean)

    def _distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    @staticmethod
    def _log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
        gaussian = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form.
        correction = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return gaussian - correction

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterised sample [..., A] and its log-probability [...] (with the tanh correction)."""
        mean, log_std = self._distribution(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), self._log_prob(u, mean, log_std)

    def log_prob(self, obs: Tensor, action: Tensor, edge: float = 1e-4) -> Tensor:
        """log pi(a|s) [...] of given actions in [-1, 1]; actions on the bounds are moved `edge` inside
        (tanh never reaches +-1, and recorded grippers sit exactly on them)."""
        mean, log_std = self._distribution(obs)
        u = torch.atanh(action.clamp(-1.0 + edge, 1.0 - edge))
        return self._log_prob(u, mean, log_std)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, parameter by parameter (one fused op per list)."""
    target_params = list(target.parameters())
    torch._foreach_lerp_(target_params, list(source.parameters()), tau)
