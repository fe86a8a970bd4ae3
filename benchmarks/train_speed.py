"""Training speed: gradient updates/s of robot_stack's trainer step against a plain eager-PyTorch update.

    python benchmarks/train_speed.py                                  # bc, td3bc, iql, cql; default + compiled on CPU
    python benchmarks/train_speed.py --algos iql --device cuda        # on a GPU: compile + CUDA graphs (the defaults)
    python benchmarks/train_speed.py --variants default --steps 200 --threads 2 --rounds 1   # a quick look

What is timed, per algorithm (batch 256, 2x256 MLPs, state observations, the algorithm's paper config):

- robot_stack: ``StepFunction(replay, algorithm, config, device, log)`` called as ``Trainer.run`` calls it
  (``algorithm.schedule`` first, ``update_actor = (step + 1) % algorithm.actor_every == 0``, the metrics summed
  on the device and read every ``log_every`` steps), sampling from a ``ReplayBuffer`` of random transitions
  (--transitions, default 100k) resident on the device. Variant ``default``: the config defaults (on CUDA:
  torch.compile + a CUDA graph; on the CPU: eager). Variant ``compiled``: ``compile: on`` (CPU only; on CUDA it
  is the default already).
- eager: the same update written as a typical single-file implementation writes it (CORL style): one
  ``nn.Sequential`` per critic looped over in Python, ``torch.optim.Adam`` with default settings (one optimizer
  per critic as CORL's TD3+BC), ``deepcopy`` targets soft-updated by a Python loop over parameters, a ``.item()``
  per loss every step for the log, and each batch drawn with ``np.random.randint`` from host numpy arrays and
  copied with ``torch.from_numpy(...).to(device)`` (the buffer of the TD3+BC authors' code; CORL keeps its
  buffer on the device but still draws the indices on the host). IQL's actor decays with CosineAnnealingLR.

Same math, network sizes and batch size on both sides. Before timing, a check shows it: both sides start
from identical weights (the eager critics get the QEnsemble's [E, in, out] weights transposed into their
nn.Linear [out, in]), take two updates on the same batch with the same RNG seed, and their losses must
agree within 1e-4 (relative to max(1, |loss|)); the check runs every algorithm's update eagerly (no
compile, no graph) on the chosen device. Warm-up steps (compile, graph capture, optimizer state) are
excluded and reported (a compiled row's warm-up is mostly compile time, shorter when torch.compile's
on-disk cache already holds the graphs from an earlier run); the timed steps run in --rounds rounds that alternate between the cases, so a
load spike on a shared machine hits all of them alike (the load average is recorded). The figure is the
ratio robot_stack / eager. Prints a table and writes benchmarks/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine, write_result  # a script's own folder is sys.path[0]
from torch import Tensor, nn
from torch.nn import functional as F

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"
ALGOS = ("bc", "td3bc", "iql", "cql")
# Timed updates per case, sized so the whole default run takes about 3 minutes on a 2-core CPU.
CPU_STEPS = {"bc": 2000, "td3bc": 750, "iql": 600, "cql": 90}
CUDA_STEPS = {"bc": 5000, "td3bc": 5000, "iql": 5000, "cql": 2000}
TARGET = {"algo": "iql", "updates_per_s": 5000, "ratio": 3.0, "devices": ("H100", "H200")}
TOLERANCE = 1e-4


# -- the eager baseline (CORL style) ------------------------------------------------------------------------------


def mlp(in_dim: int, out_dim: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


class DeterministicPolicy(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, action_dim, hidden)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


class GaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, action_dim, hidden)
        self.log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))

    def forward(self, obs: Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.net(obs))
        return torch.distributions.Normal(mean, torch.exp(self.log_std.clamp(-5.0, 2.0)))


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * action_dim, hidden)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(-5.0, 2.0)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class EagerBC:
    def __init__(self, obs_dim: int, action_dim: int, config: Any, device: torch.device) -> None:
        hidden = list(config.hidden_dims)
        self.actor = DeterministicPolicy(obs_dim, action_dim, hidden).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.algorithm.actor_lr)

    def train(self, batch: list[Tensor]) -> dict[str, float]:
        state, action, _reward, _next_state, _done = batch
        actor_loss = ((self.actor(state) - action) ** 2).sum(-1).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        return {"actor_loss": actor_loss.item()}


class EagerTD3BC:
    def __init__(self, obs_dim: int, action_dim: int, config: Any, device: torch.device) -> None:
        c, hidden = config.algorithm, list(config.hidden_dims)
        self.c, self.discount, self.total_it = c, config.gamma, 0
        self.actor = DeterministicPolicy(obs_dim, action_dim, hidden).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critics = [mlp(obs_dim + action_dim, 1, hidden).to(device) for _ in range(c.n_critics)]
        self.critic_targets = [copy.deepcopy(q) for q in self.critics]
        self.critic_optimizers = [torch.optim.Adam(q.parameters(), lr=c.critic_lr) for q in self.critics]

    def train(self, batch: list[Tensor]) -> dict[str, float]:
        c, log = self.c, {}
        self.total_it += 1
        state, action, reward, next_state, done = batch
        with torch.no_grad():
            noise = (torch.randn_like(action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-1.0, 1.0)
            next_sa = torch.cat([next_state, next_action], 1)
            target_q = torch.stack([q(next_sa).squeeze(-1) for q in self.critic_targets]).min(0).values
            target_q = reward + (1.0 - done) * self.discount * target_q
        sa = torch.cat([state, action], 1)
        critic_loss = sum(F.mse_loss(q(sa).squeeze(-1), target_q) for q in self.critics)
        log["critic_loss"] = critic_loss.item()
        for optimizer in self.critic_optimizers:
            optimizer.zero_grad()
        critic_loss.backward()
        for optimizer in self.critic_optimizers:
            optimizer.step()
        if self.total_it % c.policy_freq == 0:
            pi = self.actor(state)
            q = self.critics[0](torch.cat([state, pi], 1)).squeeze(-1)
            lmbda = c.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            log["actor_loss"] = actor_loss.item()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            for q_net, q_target in zip(self.critics, self.critic_targets):
                soft_update(q_target, q_net, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
        return log


class EagerIQL:
    def __init__(self, obs_dim: int, action_dim: int, config: Any, device: torch.device) -> None:
        c, hidden = config.algorithm, list(config.hidden_dims)
        self.c, self.discount = c, config.gamma
        self.actor = GaussianPolicy(obs_dim, action_dim, hidden).to(device)
        self.critics = [mlp(obs_dim + action_dim, 1, hidden).to(device) for _ in range(c.n_critics)]
        self.critic_targets = [copy.deepcopy(q).requires_grad_(False) for q in self.critics]
        self.value = mlp(obs_dim, 1, hidden).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_optimizer = torch.optim.Adam([p for q in self.critics for p in q.parameters()], lr=c.critic_lr)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=c.value_lr)
        self.actor_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, config.steps)

    def train(self, batch: list[Tensor]) -> dict[str, float]:
        c, log = self.c, {}
        state, action, reward, next_state, done = batch
        sa = torch.cat([state, action], 1)
        with torch.no_grad():
            target_q = torch.stack([q(sa).squeeze(-1) for q in self.critic_targets]).min(0).values
            next_v = self.value(next_state).squeeze(-1)
        # value
        v = self.value(state).squeeze(-1)
        adv = target_q - v
        value_loss = (torch.abs(c.expectile - (adv < 0).float()) * adv**2).mean()
        log["value_loss"] = value_loss.item()
        self.value_optimizer.zero_grad()
        value_loss.backward()
        self.value_optimizer.step()
        # critics
        targets = reward + (1.0 - done) * self.discount * next_v
        critic_loss = sum(F.mse_loss(q(sa).squeeze(-1), targets) for q in self.critics) / len(self.critics)
        log["critic_loss"] = critic_loss.item()
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        # actor
        exp_adv = torch.exp(c.beta * adv.detach()).clamp(max=c.max_weight)
        actor_loss = -(exp_adv * self.actor(state).log_prob(action).sum(-1)).mean()
        log["actor_loss"] = actor_loss.item()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        if c.actor_cosine_decay:
            self.actor_lr_schedule.step()
        for q_net, q_target in zip(self.critics, self.critic_targets):
            soft_update(q_target, q_net, c.tau)
        return log


class EagerCQL:
    def __init__(self, obs_dim: int, action_dim: int, config: Any, device: torch.device) -> None:
        c, hidden = config.algorithm, list(config.hidden_dims)
        self.c, self.discount, self.action_dim = c, config.gamma, action_dim
        self.target_entropy = -float(action_dim) if c.target_entropy is None else float(c.target_entropy)
        self.actor = TanhGaussianPolicy(obs_dim, action_dim, hidden).to(device)
        self.critics = [mlp(obs_dim + action_dim, 1, hidden).to(device) for _ in range(c.n_critics)]
        self.critic_targets = [copy.deepcopy(q) for q in self.critics]
        self.log_alpha = nn.Parameter(torch.zeros((), device=device))
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_optimizer = torch.optim.Adam([p for q in self.critics for p in q.parameters()], lr=c.critic_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr)

    def train(self, batch: list[Tensor]) -> dict[str, float]:
        c, log, n, dim = self.c, {}, self.c.n_actions, self.action_dim
        state, action, reward, next_state, done = batch
        batch_size = state.shape[0]
        # actor and entropy temperature (SAC)
        new_action, log_pi = self.actor(state)
        alpha = self.log_alpha.exp().detach()
        q_new = torch.stack([q(torch.cat([state, new_action], 1)).squeeze(-1) for q in self.critics]).min(0).values
        actor_loss = (alpha * log_pi - q_new).mean()
        log["actor_loss"] = actor_loss.item()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        # critics: TD + the conservative penalty
        with torch.no_grad():
            next_action, _ = self.actor(next_state)
            next_sa = torch.cat([next_state, next_action], 1)
            target_q = torch.stack([q(next_sa).squeeze(-1) for q in self.critic_targets]).min(0).values
            target_q = reward + (1.0 - done) * self.discount * target_q
            repeated_state = state.repeat_interleave(n, dim=0)
            repeated_next = next_state.repeat_interleave(n, dim=0)
            random_action = torch.rand(batch_size * n, dim, device=state.device) * 2.0 - 1.0
            pi_action, pi_log = self.actor(repeated_state)
            next_pi_action, next_pi_log = self.actor(repeated_next)
            log_density = torch.cat([torch.full((batch_size, n), dim * math.log(0.5), device=state.device),
                                     pi_log.view(batch_size, n), next_pi_log.view(batch_size, n)], dim=1)
        critic_loss = 0.0
        for q in self.critics:
            q_data = q(torch.cat([state, action], 1)).squeeze(-1)
            td_loss = F.mse_loss(q_data, target_q)  # the trainer's full MSE (the authors' nn.MSELoss), no 1/2
            q_rand = q(torch.cat([repeated_state, random_action], 1)).view(batch_size, n)
            q_pi = q(torch.cat([repeated_state, pi_action], 1)).view(batch_size, n)
            q_next = q(torch.cat([repeated_state, next_pi_action], 1)).view(batch_size, n)
            cat_q = torch.cat([q_rand, q_pi, q_next], dim=1)
            ood = c.temperature * torch.logsumexp((cat_q - log_density) / c.temperature, dim=1)
            critic_loss = critic_loss + td_loss + c.alpha * (ood - q_data).mean()
        log["critic_loss"] = critic_loss.item()
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        for q_net, q_target in zip(self.critics, self.critic_targets):
            soft_update(q_target, q_net, c.tau)
        return log


EAGER = {"bc": EagerBC, "td3bc": EagerTD3BC, "iql": EagerIQL, "cql": EagerCQL}


class HostReplay:
    """Transitions in host numpy arrays; each batch indexed on the host and copied to the device."""

    def __init__(self, arrays: list[np.ndarray], device: torch.device) -> None:
        self.arrays, self.device, self.size = arrays, device, len(arrays[0])

    def sample(self, batch_size: int) -> list[Tensor]:
        index = np.random.randint(0, self.size, size=batch_size)
        return [torch.from_numpy(array[index]).to(self.device) for array in self.arrays]


# -- weights: robot_stack -> eager -----------------------------------------------------------------------------------


@torch.no_grad()
def copy_ensemble(ensemble: nn.Module, critics: list[nn.Sequential]) -> None:
    """QEnsemble (EnsembleLinear weight [E, in, out], bias [E, 1, out]) -> one nn.Sequential per member."""
    layers = [*ensemble.hidden, ensemble.out]
    for member, critic in enumerate(critics):
        linears = [m for m in critic if isinstance(m, nn.Linear)]
        for source, linear in zip(layers, linears, strict=True):
            linear.weight.copy_(source.weight[member].T)
            linear.bias.copy_(source.bias[member, 0])


@torch.no_grad()
def copy_weights(algorithm: Any, eager: Any) -> None:
    """Give the eager implementation robot_stack's initial weights (targets included)."""
    eager.actor.net.load_state_dict(algorithm.actor.net.net.state_dict())
    if hasattr(algorithm.actor, "log_std") and isinstance(algorithm.actor.log_std, nn.Parameter):
        eager.actor.log_std.copy_(algorithm.actor.log_std)
    if hasattr(eager, "critics"):
        copy_ensemble(algorithm.critic, eager.critics)
        copy_ensemble(algorithm.critic_target, eager.critic_targets)
    if hasattr(eager, "value"):
        eager.value.load_state_dict(algorithm.value.net.state_dict())
    if hasattr(eager, "actor_target"):
        eager.actor_target.net.load_state_dict(algorithm.actor_target.net.net.state_dict())
    if hasattr(eager, "log_alpha"):
        eager.log_alpha.copy_(algorithm.temperature.log_alpha)


# -- the cases ---------------------------------------------------------------------------------------------------


def synthetic_data(transitions: int, obs_dim: int, action_dim: int, gamma: float, seed: int) -> dict[str, np.ndarray]:
    """Random frames (state ~ N(0, 1), actions uniform in [-1, 1]) chained into episodes of 200 transitions."""
    rng = np.random.default_rng(seed)
    frames = transitions + 1
    frame = np.arange(transitions)
    terminal = ((frame + 1) % 200 == 0).astype(np.float32)
    return {"state": rng.standard_normal((frames, obs_dim), dtype=np.float32),
            "action": rng.uniform(-1.0, 1.0, (frames, action_dim)).astype(np.float32),
            "frame": frame, "next_frame": frame + 1,
            "reward": rng.standard_normal(transitions, dtype=np.float32) * 0.1,
            "discount": np.full(transitions, gamma, np.float32), "terminal": terminal}


def device_replay(data: dict[str, np.ndarray], device: torch.device) -> Any:
    from robot_stack.learn.replay import ReplayBuffer

    def tensor(name: str, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(data[name], device=device).to(dtype)

    return ReplayBuffer({"state": tensor("state", torch.float32)}, tensor("action", torch.float32),
                        tensor("frame", torch.int64), tensor("next_frame", torch.int64), tensor("reward", torch.float32),
                        tensor("discount", torch.float32), tensor("terminal", torch.float32))


def host_replay(data: dict[str, np.ndarray], device: torch.device) -> HostReplay:
    """The same transitions as CORL's buffer holds them: states, actions, rewards, next_states, dones."""
    frame, next_frame = data["frame"], data["next_frame"]
    return HostReplay([data["state"][frame], data["action"][frame], data["reward"], data["state"][next_frame],
                       data["terminal"]], device)


def spec_for(obs_dim: int, action_dim: int) -> Any:
    from robot_stack.learn.observations import ObservationSpec

    return ObservationSpec(state={"state": [obs_dim]}, mean=[0.0] * obs_dim, std=[1.0] * obs_dim,
                           action_low=[-1.0] * action_dim, action_high=[1.0] * action_dim)


def make_config(name: str, steps: int, device: torch.device, **fields: Any) -> Any:
    from robot_stack.learn.config import load_config

    return load_config(name, steps=steps, device=str(device), batch_size=256, hidden_dims=[256, 256], **fields)


def compiled_graphs() -> int:
    """Graphs torch.compile has built so far in this process (growth while timing = a recompile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RobotStackCase:
    """robot_stack's StepFunction driven as Trainer.run drives it."""

    def __init__(self, name: str, variant: str, spec: Any, replay: Any, device: torch.device, total_steps: int) -> None:
        from robot_stack.learn.algorithms import algorithm_class
        from robot_stack.learn.trainer import StepFunction

        fields = {"compile": "on"} if variant == "compiled" else {}
        self.config = make_config(name, total_steps, device, **fields)
        self.device, self.messages = device, []
        self.algorithm = algorithm_class(name)(spec, self.config, device)
        self.step_function = StepFunction(replay, self.algorithm, self.config, device, self.messages.append)
        self.algorithm.train(True)
        self.step, self.last_means = 0, {}

    def run(self, steps: int) -> None:
        algorithm, config, every = self.algorithm, self.config, self.algorithm.actor_every
        for _ in range(steps):
            algorithm.schedule(self.step, config.steps)
            self.step_function((self.step + 1) % every == 0)  # losses are summed on the device inside it
            self.step += 1
            if self.step % config.log_every == 0:
                self.last_means = self.step_function.read()
        synchronize(self.device)


class EagerCase:
    """The CORL-style loop: batch = replay.sample(batch_size); log_dict = trainer.train(batch)."""

    def __init__(self, name: str, obs_dim: int, action_dim: int, replay: HostReplay, device: torch.device,
                 total_steps: int) -> None:
        self.config = make_config(name, total_steps, device)
        self.trainer = EAGER[name](obs_dim, action_dim, self.config, device)
        self.replay, self.device, self.log_dict = replay, device, {}

    def run(self, steps: int) -> None:
        for _ in range(steps):
            batch = self.replay.sample(self.config.batch_size)
            self.log_dict = self.trainer.train(batch)  # CORL: wandb.log(log_dict) every step
        synchronize(self.device)


def check(name: str, spec: Any, replay: Any, device: torch.device, obs_dim: int, action_dim: int) -> dict:
    """Two updates from identical weights on one batch: robot_stack's update (eager) vs the baseline's losses."""
    from robot_stack.learn.algorithms import algorithm_class

    config = make_config(name, 1000, device, compile="off", cuda_graphs="off")
    torch.manual_seed(1)
    algorithm = algorithm_class(name)(spec, config, device)
    algorithm.train(True)
    eager = EAGER[name](obs_dim, action_dim, config, device)
    copy_weights(algorithm, eager)
    generator = torch.Generator(device=device).manual_seed(2)
    batch = replay.gather(torch.randint(len(replay), (config.batch_size,), device=device, generator=generator))
    eager_batch = [batch.obs["state"], batch.action, batch.reward, batch.next_obs["state"], batch.terminal]
    updates, worst = [], 0.0
    for step in range(2):
        algorithm.schedule(step, config.steps)
        torch.manual_seed(100 + step)
        ours = {k: float(v) for k, v in algorithm.update(batch, (step + 1) % algorithm.actor_every == 0).items()}
        torch.manual_seed(100 + step)
        theirs = eager.train(eager_batch)
        diffs = {k: abs(ours[k] - theirs[k]) / max(1.0, abs(theirs[k])) for k in theirs}
        worst = max(worst, *diffs.values())
        updates.append({"robot_stack": {k: ours[k] for k in theirs}, "eager": theirs})
    return {"updates": updates, "max_rel_diff": worst, "ok": worst <= TOLERANCE}


# -- the run -----------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated, from bc,td3bc,iql,cql")
    parser.add_argument("--variants", default="default,compiled",
                        help="robot_stack variants: default (config defaults), compiled (compile: on; CPU only)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed updates per case (default per algorithm: CPU {CPU_STEPS}, CUDA {CUDA_STEPS})")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates first (default 10 CPU, 50 CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="the timed updates are split into this many rounds")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    algos = [a for a in args.algos.split(",") if a]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [a for a in algos if a not in ALGOS] + [v for v in variants if v not in ("default", "compiled")]
    if unknown or not algos or not variants:
        parser.error(f"unknown or missing --algos/--variants: {unknown}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Every algorithm of this one process brings its own Adams; dynamo guards Optimizer.step on the instance,
    # so ~10 optimizers would pass its default limit of 8 recompiles (a training run has at most 3).
    torch._dynamo.config.recompile_limit = 64
    from robot_stack.learn.trainer import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and "compiled" in variants:
        variants.remove("compiled")  # the CUDA default already compiles (and captures a CUDA graph)
        variants = variants or ["default"]
    warmup = args.warmup if args.warmup is not None else (50 if device.type == "cuda" else 10)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    machine_info = machine(["numpy", "torch", "robot_stack"], device=str(device), device_name=device_name(device),
                           torch_threads=torch.get_num_threads())
    load_before = machine_info["machine"]["load_average"]

    data = synthetic_data(args.transitions, args.obs_dim, args.action_dim, 0.99, args.seed)
    replay, host = device_replay(data, device), host_replay(data, device)
    spec = spec_for(args.obs_dim, args.action_dim)

    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"obs {args.obs_dim}, action {args.action_dim}, batch 256, 2x256, load average {load_before[0]:.2f}")
    checks = {}
    for name in algos:
        checks[name] = check(name, spec, replay, device, args.obs_dim, args.action_dim)
        print(f"check {name:6s} losses of 2 updates from identical weights: max relative diff "
              f"{checks[name]['max_rel_diff']:.1e} -> {'ok' if checks[name]['ok'] else 'MISMATCH'}", flush=True)

    rows = []
    header = f"{'algo':6s} {'variant':9s} {'robot_stack/s':>13s} {'eager/s':>9s} {'ratio':>6s} {'warm-up s':>9s} {'spread':>6s}"
    print(header)
    print("-" * len(header))
    for name in algos:
        steps = args.steps or (CUDA_STEPS if device.type == "cuda" else CPU_STEPS)[name]
        per_round = max(1, steps // args.rounds)
        total = warmup + per_round * args.rounds
        torch.manual_seed(args.seed)
        cases: dict[str, Any] = {"eager": EagerCase(name, args.obs_dim, args.action_dim, host, device, total)}
        for variant in variants:
            cases[variant] = RobotStackCase(name, variant, spec, replay, device, total)
        warmup_s, rates = {}, {key: [] for key in cases}
        graphs = {key: [0, 0] for key in cases}  # compiled graphs built in warm-up, while timing
        for key, case in cases.items():
            before, start = compiled_graphs(), time.perf_counter()
            case.run(warmup)
            warmup_s[key] = time.perf_counter() - start
            graphs[key][0] = compiled_graphs() - before
        for _ in range(args.rounds):  # rounds alternate between the cases: load changes hit all of them
            for key, case in cases.items():
                before, start = compiled_graphs(), time.perf_counter()
                case.run(per_round)
                rates[key].append(per_round / (time.perf_counter() - start))
                graphs[key][1] += compiled_graphs() - before
        eager_rate = per_round * args.rounds / sum(per_round / r for r in rates["eager"])
        for variant in variants:
            case = cases[variant]
            rate = per_round * args.rounds / sum(per_round / r for r in rates[variant])
            row = {"algo": name, "variant": variant, "compile": case.step_function.compiled,
                   "cuda_graph": case.step_function.graphed, "timed_updates": per_round * args.rounds,
                   "updates_per_s": round(rate, 1), "eager_updates_per_s": round(eager_rate, 1),
                   "ratio": round(rate / eager_rate, 3), "warmup_updates": warmup,
                   "warmup_s": round(warmup_s[variant], 2), "eager_warmup_s": round(warmup_s["eager"], 2),
                   "compiled_graphs_in_warmup": graphs[variant][0], "compiled_graphs_while_timed": graphs[variant][1],
                   "round_updates_per_s": [round(r, 1) for r in rates[variant]],
                   "eager_round_updates_per_s": [round(r, 1) for r in rates["eager"]],
                   "messages": case.messages}
            rows.append(row)
            spread = max(rates[variant]) / min(rates[variant])
            print(f"{name:6s} {variant:9s} {rate:13.1f} {eager_rate:9.1f} {rate / eager_rate:6.2f} "
                  f"{warmup_s[variant]:9.1f} {spread:6.2f}", flush=True)
            for message in case.messages:
                print(f"       {message}")
            if graphs[variant][1]:
                print(f"       {graphs[variant][1]} graph(s) compiled while timed: a recompile in the timed steps")
        del cases
    print("ratio = robot_stack / eager; warm-up s: the untimed first updates (compile, graph capture); "
          "spread: fastest / slowest round")

    name = device_name(device)
    target_row = next((r for r in rows if r["algo"] == TARGET["algo"] and r["variant"] == "default"), None)
    measured = device.type == "cuda" and any(d in name for d in TARGET["devices"]) and target_row is not None
    verdict = "not measured here"
    if measured:
        ok = target_row["updates_per_s"] >= TARGET["updates_per_s"] and target_row["ratio"] >= TARGET["ratio"]
        verdict = "pass" if ok else "fail"
    print(f"target: IQL >= {TARGET['updates_per_s']} updates/s and >= {TARGET['ratio']:g}x eager on an H100/H200: "
          f"{verdict}")
    machine_info["machine"]["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    result = {
        "benchmark": "train_speed",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine_info,
        "settings": {"obs_dim": args.obs_dim, "action_dim": args.action_dim, "batch_size": 256,
                     "hidden_dims": [256, 256], "transitions": args.transitions, "warmup": warmup,
                     "rounds": args.rounds, "variants": variants, "seed": args.seed},
        "check": checks,
        "rows": rows,
        "target": {"algo": TARGET["algo"], "updates_per_s": TARGET["updates_per_s"], "ratio": TARGET["ratio"],
                   "devices": list(TARGET["devices"]), "result": verdict},
    }
    write_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
