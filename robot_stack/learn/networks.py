"""Networks the algorithms share: MLPs, a vectorized Q-ensemble, actors, and the target-network update.

Actions are in [-1, 1] (the command bounds are scaled away before learning and put back at export).
The Q-ensemble is one batched module (weights [E, in, out], one bmm per layer), not a loop over critics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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

    def forward(self, x: Tensor, members: int | Tensor | None = None) -> Tensor:
        """members: use only those layers (see ``select``; x is then [len(members), B, in])."""
        return torch.baddbmm(select(self.bias, members), x, select(self.weight, members))


class EnsembleLayerNorm(nn.Module):
    """E independent LayerNorms over the last dimension of x [E, B, width], each with its own gain and bias."""

    def __init__(self, width: int, ensemble_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, width))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, width))

    def forward(self, x: Tensor, members: int | Tensor | None = None) -> Tensor:
        normalized = F.layer_norm(x, x.shape[-1:])
        return torch.addcmul(select(self.bias, members), normalized, select(self.weight, members))


def select(parameter: Tensor, members: int | Tensor | None) -> Tensor:
    """An ensemble parameter [E, ...] for some members: all (None), the first n (an int), or those at the indices
    of an int64 tensor [k], in its order (a random subset drawn on the device: no host sync)."""
    if members is None:
        return parameter
    if isinstance(members, int):
        return parameter[:members]
    return parameter.index_select(0, members)


class QEnsemble(nn.Module):
    """E critics Q_e(s, a) in one module: forward(obs [B, D], action [B, A]) -> [E, B].

    layer_norm: each hidden layer is linear -> LayerNorm -> ReLU (RLPD's critic, Ball et al. 2023: it keeps Q
    from extrapolating far beyond the values seen in the data)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int], ensemble_size: int = 2,
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        dims = [obs_dim + action_dim, *hidden_dims]
        self.hidden = nn.ModuleList(EnsembleLinear(i, o, ensemble_size) for i, o in itertools.pairwise(dims))
        self.norms = nn.ModuleList(EnsembleLayerNorm(o, ensemble_size) for o in hidden_dims) if layer_norm else None
        self.out = EnsembleLinear(dims[-1], 1, ensemble_size)

    def forward(self, obs: Tensor, action: Tensor, members: int | Tensor | None = None) -> Tensor:
        """Q-values [E, B]; with `members`, only those critics are run ([k, B]): the first k for an int k, the
        ones at the indices of an int64 tensor [k] in its order."""
        x = torch.cat([obs, action], dim=-1)
        count = self.ensemble_size if members is None else members if isinstance(members, int) else len(members)
        x = x.unsqueeze(0).expand(count, *x.shape)
        for index, layer in enumerate(self.hidden):
            x = layer(x, members)
            if self.norms is not None:
                x = self.norms[index](x, members)
            x = F.relu_(x)  # in place: the op before (baddbmm, or the norm's addcmul) keeps its inputs for backward
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

    def sample(self, obs: Tensor) -> Tensor:
        """A draw of N(mean, std) clipped to the action bounds, [B, A] in [-1, 1] (IQL's exploration action)."""
        mean = torch.tanh(self.net(obs))
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp()
        return (mean + std * torch.randn_like(mean)).clamp(-1.0, 1.0)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log pi(a|s) summed over action dimensions, [B]."""
        mean = torch.tanh(self.net(obs))
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return (-0.5 * ((action - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC's policy (CQL's actor): a = tanh(u), u ~ N(mu(s), sigma(s)); acts with tanh(mu).

    Elements listed in ``binary`` (a gripper that is either open or closed) are instead a Bernoulli over
    the two bounds {-1, +1}: the element's mean output is the logit of +1 (its log-std output is unused),
    and the actor acts with the more probable bound. A Gaussian over such an element can only move its
    command by dQ/da, which a critic with a valley between the bounds stops (docs/results.md); the
    Bernoulli's gradient is the difference of Q at the two bounds (``sample_modes``).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int],
                 log_std_min: float = -5.0, log_std_max: float = 2.0, binary: Sequence[int] = ()) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 2 * action_dim, hidden_dims)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        if any(not 0 <= i < action_dim for i in binary) or len(set(binary)) != len(binary):
            raise ValueError(f"binary action elements {list(binary)} must be distinct indices below {action_dim}")
        self.binary = sorted(binary)
        self.continuous = [i for i in range(action_dim) if i not in self.binary]
        # Every combination of the binary elements' bounds, [2^k, k]: the modes sample_modes enumerates.
        modes = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=len(self.binary))), dtype=torch.float32)
        self.register_buffer("modes", modes.reshape(2 ** len(self.binary), len(self.binary)), persistent=False)
        mask = torch.zeros(action_dim, dtype=torch.bool)
        mask[self.binary] = True
        self.register_buffer("binary_mask", mask, persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        mean, _ = self.net(obs).chunk(2, dim=-1)
        return self.snap(torch.tanh(mean))  # tanh keeps the logit's sign: a binary element's likelier bound

    def _distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    @staticmethod
    def _log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
        gaussian = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form.
        correction = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return gaussian - correction

    def _continuous_sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tanh(u) [..., A] (binary elements still to be set), log-density of the continuous elements [...],
        and the logits of the binary elements [..., k]."""
        mean, log_std = self._distribution(obs)
        if not self.binary:
            u = mean + log_std.exp() * torch.randn_like(mean)
            return torch.tanh(u), self._log_prob(u, mean, log_std), mean[..., :0]
        c = self.continuous
        u = mean[..., c] + log_std[..., c].exp() * torch.randn_like(mean[..., c])
        action = torch.zeros_like(mean)
        action[..., c] = torch.tanh(u)
        return action, self._log_prob(u, mean[..., c], log_std[..., c]), mean[..., self.binary]

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """A sample [..., A] and its log-probability [...] (with the tanh correction); reparameterised in the
        continuous elements, drawn from the Bernoulli in the binary ones (their log-mass is added)."""
        action, log_pi, logits = self._continuous_sample(obs)
        if self.binary:
            bounds = torch.where(torch.rand_like(logits) < torch.sigmoid(logits), 1.0, -1.0)
            action[..., self.binary] = bounds
            log_pi = log_pi + F.logsigmoid(bounds * logits).sum(-1)
        return action, log_pi

    def sample_modes(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One reparameterised sample of the continuous elements under every mode of the binary ones:
        actions [M, ..., A], log pi [M, ...] and the modes' probabilities [M, ...] (differentiable), M = 2^k.

        E_pi[f(a)] = sum over modes of probability * f(action) exactly in the binary elements, so a loss on
        it gets their gradient from the difference of f between the bounds. With no binary element, M = 1
        and this is ``sample`` with probability 1."""
        action, log_pi, logits = self._continuous_sample(obs)
        if not self.binary:
            return action[None], log_pi[None], torch.ones_like(log_pi)[None]
        modes = self.modes.view(-1, *([1] * (logits.dim() - 1)), len(self.binary))  # [M, 1.., k]
        log_mass = F.logsigmoid(modes * logits).sum(-1)  # [M, ...]
        actions = action.expand(len(self.modes), *action.shape).clone()
        actions[..., self.binary] = modes.expand(*actions.shape[:-1], len(self.binary))
        return actions, log_pi + log_mass, log_mass.exp()

    def log_prob(self, obs: Tensor, action: Tensor, edge: float = 1e-4) -> Tensor:
        """log pi(a|s) [...] of given actions in [-1, 1]; actions on the bounds are moved `edge` inside
        (tanh never reaches +-1, and recorded grippers sit exactly on them). A binary element counts as the
        bound on its side of 0."""
        mean, log_std = self._distribution(obs)
        if not self.binary:
            return self._log_prob(torch.atanh(action.clamp(-1.0 + edge, 1.0 - edge)), mean, log_std)
        c = self.continuous
        u = torch.atanh(action[..., c].clamp(-1.0 + edge, 1.0 - edge))
        bounds = _bound(action[..., self.binary])
        return self._log_prob(u, mean[..., c], log_std[..., c]) + F.logsigmoid(bounds * mean[..., self.binary]).sum(-1)

    def snap(self, action: Tensor) -> Tensor:
        """Actions [..., A] with each binary element moved to the bound on its side of 0 (as is without any):
        what the actor's binary elements mean, applied to recorded or uniformly drawn commands."""
        if not self.binary:
            return action
        return torch.where(self.binary_mask, _bound(action), action)


def _bound(x: Tensor) -> Tensor:
    """The bound (+1 or -1) on each value's side of 0 (0 itself: -1)."""
    return torch.where(x > 0, 1.0, -1.0)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, parameter by parameter (one fused op per list)."""
    target_params = list(target.parameters())
    torch._foreach_lerp_(target_params, list(source.parameters()), tau)
