"""Online fine-tuning speed: environment steps/s and updates/s of robot_stack's online loop against a plain loop.

    python benchmarks/online_speed.py --threads 1        # CPU: SAC on reach2d at UTD 1 and 10 (9 min, shared 2 cores)
    python benchmarks/online_speed.py --device cuda      # on a GPU (robot_stack: compile + CUDA graphs, the defaults)
    python benchmarks/online_speed.py --quick --out /tmp/online_speed.json   # a smoke run: tiny, not a measurement

Both sides run SAC (Haarnoja et al. 2018: twin critics, automatic entropy temperature, target entropy -dim(A)) with
2x256 MLPs, batch 256 (--hidden, --batch-size), the same UTD, on reach2d from the sim (gymnasium, one env, 30-step
episodes), fine-tuning from a small reach2d dataset the script collects with the scripted experts: each batch half
offline, half online (RLPD's symmetric sampling; offline-only until the first online episode lands), no offline
phase, no evaluations, no checkpoint before the end.

- robot_stack: ``run_online(Trainer(config))``, the loop ``robot-stack train --algo sac --online sim:reach2d`` runs:
  OnlineRun.act (the actor's sample), the env step, OnlineRun.update(utd) per env step (sampling from the
  device-resident online replay and offline replay, losses read every log_every updates), and per finished
  episode: its commit to <run>/online.zarr (source online: nothing collected is lost) and OnlineRun.add_episode.
  The benchmark observes the loop through methods wrapped while it runs: OnlineRun.update (timed; on CUDA
  synchronized at its end, so the GPU time of the updates counts as updates, not as the next act's wait),
  OnlineRun.add_episode (round boundaries: there the plain loop's rounds run while robot_stack's clock is stopped)
  and OnlineDataset.commit (timed: the share of the collection time that goes to writing online.zarr).
- plain: the same algorithm as a typical single-file implementation writes it (cleanrl's sac_continuous_action.py
  loop, CORL's offline + online batch mixing): gymnasium's env.step, states normalized with numpy, the actor's
  sample for one observation copied to the host, numpy ring buffer on the host, each batch drawn with
  np.random.randint from the offline and online arrays and copied to the device with torch.from_numpy(...).to(device),
  one nn.Sequential per critic, Adam with default settings, targets soft-updated by a Python loop over parameters,
  each loss read with .item() every update (for the log).

Figures, each side: env_steps_per_s = env steps / (loop time - update time), the collection side (policy sample,
env step, buffer / replay bookkeeping; robot_stack's includes writing online.zarr); updates_per_s = updates / update
time; loop_env_steps_per_s = env steps / loop time (how fast a fine-tuning run at this UTD moves); robot_stack's
dataset_commit_s = seconds of the collection time spent committing episodes to online.zarr. The ratio is
robot_stack / plain. Before timing, a check shows the update is the same math: both sides start from identical
weights, take two updates on the same batch with the same RNG seed, and their losses must agree within 1e-4 (relative
to max(1, |loss|)). The first --warmup-episodes episodes of each UTD (torch.compile, CUDA-graph capture, optimizer
state) are excluded; the timed env steps run in --rounds rounds that alternate between the sides (each plain round
runs exactly the env steps robot_stack's round just ran), so a load spike on a shared machine hits both alike (the
load average is recorded). Prints a table and writes benchmarks/results/online_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine, write_result  # a script's own folder is sys.path[0]
from torch import Tensor, nn
from torch.nn import functional as F
from train_speed import TanhGaussianPolicy, copy_ensemble, mlp

RESULTS = Path(__file__).resolve().parent / "results" / "online_speed.json"
TASK = "reach2d"
ONLINE_RATIO = 0.5
TOLERANCE = 1e-4
# Timed env steps per side and UTD: 9 minutes in all with one torch thread on a 2-core CPU at load average 7-10.
CPU_ENV_STEPS = {1: 1200, 10: 270}
CUDA_ENV_STEPS = {1: 1200, 10: 300}
# --quick: a smoke run of seconds (64-unit networks, batch 64); it checks the script and measures nothing worth keeping.
QUICK = {"offline_episodes": 4, "warmup_episodes": 1, "rounds": 2, "env_steps": 60, "batch_size": 64, "hidden": 64}


# -- the plain loop (cleanrl / CORL style) ----------------------------------------------------------------------------


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for target_param, param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)


class PlainSAC:
    """SAC in the order of robot_stack's update (actor and temperature, then the critics on the updated actor)."""

    def __init__(self, obs_dim: int, action_dim: int, config: Any, device: torch.device) -> None:
        c, hidden = config.algorithm, list(config.hidden_dims)
        self.tau, self.gamma, self.target_entropy = c.tau, config.gamma, -float(action_dim)
        self.actor = TanhGaussianPolicy(obs_dim, action_dim, hidden).to(device)
        self.qf1 = mlp(obs_dim + action_dim, 1, hidden).to(device)
        self.qf2 = mlp(obs_dim + action_dim, 1, hidden).to(device)
        self.qf1_target, self.qf2_target = copy.deepcopy(self.qf1), copy.deepcopy(self.qf2)
        self.log_alpha = torch.zeros(1, requires_grad=True, device=device)
        self.q_optimizer = torch.optim.Adam(list(self.qf1.parameters()) + list(self.qf2.parameters()), lr=c.critic_lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr)

    def train(self, batch: list[Tensor]) -> dict[str, float]:
        obs, actions, rewards, next_obs, dones = batch
        alpha = self.log_alpha.exp().detach()
        pi, log_pi = self.actor(obs)
        sa_pi = torch.cat([obs, pi], 1)
        min_qf_pi = torch.min(self.qf1(sa_pi), self.qf2(sa_pi)).squeeze(-1)
        actor_loss = (alpha * log_pi - min_qf_pi).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        alpha_loss = (-self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.a_optimizer.zero_grad()
        alpha_loss.backward()
        self.a_optimizer.step()
        with torch.no_grad():
            next_actions, next_log_pi = self.actor(next_obs)
            next_sa = torch.cat([next_obs, next_actions], 1)
            min_qf_next = torch.min(self.qf1_target(next_sa), self.qf2_target(next_sa)).squeeze(-1)
            next_q_value = rewards + (1 - dones) * self.gamma * (min_qf_next - alpha * next_log_pi)
        sa = torch.cat([obs, actions], 1)
        qf1_loss = F.mse_loss(self.qf1(sa).squeeze(-1), next_q_value)
        qf2_loss = F.mse_loss(self.qf2(sa).squeeze(-1), next_q_value)
        qf_loss = qf1_loss + qf2_loss
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        self.q_optimizer.step()
        soft_update(self.qf1_target, self.qf1, self.tau)
        soft_update(self.qf2_target, self.qf2, self.tau)
        return {"actor_loss": actor_loss.item(), "alpha_loss": alpha_loss.item(), "critic_loss": qf_loss.item(),
                "alpha": self.log_alpha.exp().item()}


class RingBuffer:
    """Online transitions in host numpy arrays (cleanrl's ReplayBuffer): obs, action, reward, next_obs, done."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.arrays = [np.zeros((capacity, obs_dim), np.float32), np.zeros((capacity, action_dim), np.float32),
                       np.zeros(capacity, np.float32), np.zeros((capacity, obs_dim), np.float32),
                       np.zeros(capacity, np.float32)]
        self.capacity, self.position, self.size = capacity, 0, 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, done: bool) -> None:
        for array, value in zip(self.arrays, (obs, action, reward, next_obs, done)):
            array[self.position] = value
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)


class PlainLoop:
    """cleanrl's loop: one env step with the actor's sample, then utd updates on offline + online batches."""

    def __init__(self, offline: list[np.ndarray], spec: Any, config: Any, device: torch.device, capacity: int) -> None:
        import gymnasium

        from robot_stack.learn.evaluate import SIM_ENV
        from robot_stack.learn.observations import env_key

        self.env = gymnasium.make(SIM_ENV, task=TASK)
        self.keys = [env_key(name) for name in spec.state]
        self.mean, self.std = np.asarray(spec.mean), np.asarray(spec.std)
        self.low = self.env.action_space.low.astype(np.float64)
        self.half_range = (self.env.action_space.high - self.env.action_space.low).astype(np.float64) / 2.0
        self.agent = PlainSAC(spec.state_dim, spec.action_dim, config, device)
        self.offline, self.online = offline, RingBuffer(capacity, spec.state_dim, spec.action_dim)
        self.batch_size, self.utd, self.device = config.batch_size, config.utd, device
        self.online_rows = round(ONLINE_RATIO * config.batch_size)
        self.episodes, self.env_steps, self.updates, self.log_dict = 0, 0, 0, {}
        self.obs = self.normalize(self.env.reset(seed=self.episodes)[0])

    def normalize(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        raw = np.concatenate([np.asarray(obs[key], np.float64).ravel() for key in self.keys])
        return ((raw - self.mean) / self.std).astype(np.float32)

    def sample(self) -> list[Tensor]:
        online = self.online_rows if self.online.size else 0
        offline_index = np.random.randint(0, len(self.offline[0]), size=self.batch_size - online)
        online_index = np.random.randint(0, max(self.online.size, 1), size=online)
        return [torch.from_numpy(np.concatenate([offline_array[offline_index], online_array[online_index]]))
                .to(self.device) for offline_array, online_array in zip(self.offline, self.online.arrays)]

    def run(self, env_steps: int) -> float:
        """env_steps env steps with utd updates after each; returns the seconds spent in updates."""
        update_s = 0.0
        for _ in range(env_steps):
            with torch.no_grad():
                action, _ = self.agent.actor(torch.Tensor(self.obs).to(self.device).unsqueeze(0))
            action = action.cpu().numpy()[0]
            next_obs, reward, terminated, truncated, _info = self.env.step(self.low + (action + 1.0) * self.half_range)
            next_obs = self.normalize(next_obs)
            self.online.add(self.obs, action, reward, next_obs, terminated)
            self.obs = next_obs
            if terminated or truncated:
                self.episodes += 1
                self.obs = self.normalize(self.env.reset(seed=self.episodes)[0])
            self.env_steps += 1
            start = time.perf_counter()
            for _ in range(self.utd):
                self.log_dict = self.agent.train(self.sample())  # CORL: wandb.log(log_dict) every update
            update_s += time.perf_counter() - start
            self.updates += self.utd
        return update_s

    def close(self) -> None:
        self.env.close()


# -- robot_stack's loop, observed ---------------------------------------------------------------------------------


class LoopProbe:
    """Times OnlineRun.update calls and ends a round when an added episode crosses the next boundary (env steps),
    calling `between(round, env_steps)` there with robot_stack's clock stopped (round -1: the warm-up)."""

    def __init__(self, boundaries: list[int], device: torch.device,
                 between: Callable[[int, int], None]) -> None:
        self.boundaries, self.device, self.between = boundaries, device, between
        self.round = -1  # -1: the warm-up
        self.update_s = self.commit_s = 0.0
        self.round_start = time.perf_counter()
        self.start_env_steps = self.start_updates = 0
        self.rounds: list[dict[str, float]] = []
        self.warmup_s = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from robot_stack.learn.online import OnlineDataset, OnlineRun

        update, add_episode, commit = OnlineRun.update, OnlineRun.add_episode, OnlineDataset.commit
        probe = self

        def timed_update(run: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = update(run, *args, **kwargs)
            synchronize(probe.device)
            probe.update_s += time.perf_counter() - start
            return result

        def bounded_add_episode(run: Any, *args: Any, **kwargs: Any) -> None:
            add_episode(run, *args, **kwargs)
            probe.after_episode(run)

        def timed_commit(dataset: Any, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            commit(dataset, *args, **kwargs)
            probe.commit_s += time.perf_counter() - start

        OnlineRun.update, OnlineRun.add_episode, OnlineDataset.commit = timed_update, bounded_add_episode, timed_commit
        try:
            yield
        finally:
            OnlineRun.update, OnlineRun.add_episode, OnlineDataset.commit = update, add_episode, commit

    def after_episode(self, run: Any) -> None:
        if self.round + 1 >= len(self.boundaries) or run.env_steps < self.boundaries[self.round + 1]:
            return
        synchronize(self.device)
        seconds = time.perf_counter() - self.round_start
        env_steps, updates = run.env_steps - self.start_env_steps, run.step - self.start_updates
        if self.round < 0:
            self.warmup_s = seconds
        else:
            self.rounds.append({"env_steps": env_steps, "updates": updates, "seconds": seconds,
                                "update_s": self.update_s, "commit_s": self.commit_s})
        self.between(self.round, env_steps)
        self.round += 1
        self.start_env_steps, self.start_updates, self.update_s, self.commit_s = run.env_steps, run.step, 0.0, 0.0
        self.round_start = time.perf_counter()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the check: the same update on both sides -------------------------------------------------------------------------


@torch.no_grad()
def copy_weights(algorithm: Any, plain: PlainSAC) -> None:
    """robot_stack's SAC weights (targets and temperature included) into the plain agent."""
    plain.actor.net.load_state_dict(algorithm.actor.net.net.state_dict())
    copy_ensemble(algorithm.critic, [plain.qf1, plain.qf2])
    copy_ensemble(algorithm.critic_target, [plain.qf1_target, plain.qf2_target])
    plain.log_alpha.copy_(algorithm.temperature.log_alpha)


def check(config: Any, spec: Any, replay: Any, device: torch.device) -> dict[str, Any]:
    """Two updates from identical weights on one batch: robot_stack's SAC update (eager) vs the plain one's losses."""
    from robot_stack.learn.algorithms import algorithm_class

    config = copy.deepcopy(config)
    config.compile, config.cuda_graphs = "off", "off"
    torch.manual_seed(1)
    algorithm = algorithm_class("sac")(spec, config, device)
    algorithm.train(True)
    plain = PlainSAC(spec.state_dim, spec.action_dim, config, device)
    copy_weights(algorithm, plain)
    generator = torch.Generator(device=device).manual_seed(2)
    batch = replay.gather(torch.randint(len(replay), (config.batch_size,), device=device, generator=generator))
    plain_batch = [batch.obs["state"], batch.action, batch.reward, batch.next_obs["state"], batch.terminal]
    keys, updates, worst = ("actor_loss", "critic_loss"), [], 0.0
    for step in range(2):
        torch.manual_seed(100 + step)
        ours = {key: float(value) for key, value in algorithm.update(batch, True).items()}
        torch.manual_seed(100 + step)
        theirs = plain.train(plain_batch)
        worst = max(worst, *(abs(ours[k] - theirs[k]) / max(1.0, abs(theirs[k])) for k in keys))
        updates.append({"robot_stack": {k: ours[k] for k in keys}, "plain": {k: theirs[k] for k in keys}})
    return {"updates": updates, "max_rel_diff": worst, "ok": worst <= TOLERANCE}


# -- the run ---------------------------------------------------------------------------------------------------------


def make_config(dataset: Path, out: Path, device: torch.device, utd: int, online_steps: int, args: Any) -> Any:
    """The sac config of a run: no offline phase, no evaluations, no checkpoint before the end."""
    from robot_stack.learn.config import load_config

    return load_config("sac", dataset=str(dataset), steps=0, online=f"sim:{TASK}", online_steps=online_steps, utd=utd,
                       online_ratio=ONLINE_RATIO, warmup_steps=0, eval_every=-1, online_eval_every=0,
                       checkpoint_every=10**9, device=str(device), out=str(out), batch_size=args.batch_size,
                       hidden_dims=[args.hidden, args.hidden], seed=args.seed)


def offline_arrays(replay: Any) -> list[np.ndarray]:
    """The offline transitions as CORL's buffer holds them: states, actions, rewards, next_states, dones."""
    frame, next_frame = replay.frame.cpu().numpy(), replay.next_frame.cpu().numpy()
    state = replay.frames["state"].cpu().numpy()
    return [state[frame], replay.action.cpu().numpy()[frame], replay.reward.cpu().numpy(), state[next_frame],
            replay.terminal.cpu().numpy()]


def rates(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """A side's figures over its timed rounds."""
    env_steps, updates = sum(r["env_steps"] for r in rounds), sum(r["updates"] for r in rounds)
    seconds, update_s = sum(r["seconds"] for r in rounds), sum(r["update_s"] for r in rounds)
    figures = {"env_steps": env_steps, "updates": updates, "seconds": round(seconds, 3), "update_s": round(update_s, 3),
               "env_steps_per_s": round(env_steps / max(seconds - update_s, 1e-9), 1),
               "updates_per_s": round(updates / max(update_s, 1e-9), 1),
               "loop_env_steps_per_s": round(env_steps / max(seconds, 1e-9), 1),
               "round_loop_env_steps_per_s": [round(r["env_steps"] / max(r["seconds"], 1e-9), 1) for r in rounds]}
    if "commit_s" in rounds[0]:  # robot_stack's side
        commit_s = sum(r["commit_s"] for r in rounds)
        figures |= {"dataset_commit_s": round(commit_s, 3),
                    "dataset_commit_share": round(commit_s / max(seconds - update_s, 1e-9), 3)}
    return figures


def run_utd(utd: int, dataset: Path, folder: Path, device: torch.device, env_steps: int, horizon: int,
            args: Any) -> dict[str, Any]:
    """One UTD: robot_stack's run_online with the plain loop's rounds run between its own."""
    from robot_stack.learn.online import run_online
    from robot_stack.learn.trainer import Trainer

    per_round = max(1, math.ceil(env_steps / args.rounds / horizon)) * horizon  # whole episodes
    warmup = args.warmup_episodes * horizon
    boundaries = [warmup + k * per_round for k in range(args.rounds + 1)]
    config = make_config(dataset, folder / f"run_utd{utd}", device, utd, boundaries[-1], args)
    messages: list[str] = []
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    trainer = Trainer(config, progress=False, log=messages.append)
    plain = PlainLoop(offline_arrays(trainer.replay), trainer.spec, config, device, capacity=boundaries[-1] + horizon)
    plain_rounds: list[dict[str, float]] = []
    plain_warmup_s = 0.0

    def between(index: int, round_env_steps: int) -> None:
        nonlocal plain_warmup_s
        start, updates = time.perf_counter(), plain.updates
        update_s = plain.run(round_env_steps)
        synchronize(device)
        seconds = time.perf_counter() - start
        if index < 0:
            plain_warmup_s = seconds
        else:
            plain_rounds.append({"env_steps": round_env_steps, "updates": plain.updates - updates,
                                 "seconds": seconds, "update_s": update_s})

    probe = LoopProbe(boundaries, device, between)
    try:
        with probe.installed():
            result = run_online(trainer, progress=False)
    finally:
        plain.close()
    ours, theirs = rates(probe.rounds), rates(plain_rounds)
    ratio = {key: round(ours[key] / max(theirs[key], 1e-9), 3)
             for key in ("env_steps_per_s", "updates_per_s", "loop_env_steps_per_s")}
    step_function = trainer.step_function
    return {"utd": utd, "robot_stack": ours, "plain": theirs, "ratio": ratio,
            "warmup_env_steps": warmup, "warmup_s": round(probe.warmup_s, 2),
            "plain_warmup_s": round(plain_warmup_s, 2),
            "run_env_steps": result["online"]["env_steps"], "run_updates": result["online"]["updates"],
            "plain_env_steps": plain.env_steps, "plain_updates": plain.updates,
            "compile": step_function.compiled, "cuda_graph": step_function.graphed, "messages": messages}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utd", default="1,10", help="comma-separated updates per env step (default 1,10)")
    parser.add_argument("--env-steps", type=int, default=None,
                        help=f"timed env steps per side and UTD, whole episodes (default: CPU {CPU_ENV_STEPS}, "
                             f"CUDA {CUDA_ENV_STEPS})")
    parser.add_argument("--rounds", type=int, default=3, help="the timed env steps are split into this many rounds")
    parser.add_argument("--warmup-episodes", type=int, default=2,
                        help="untimed episodes first (the offline-only and the mixed step each compile / capture once)")
    parser.add_argument("--offline-episodes", type=int, default=20,
                        help="reach2d episodes the script collects as the offline dataset (20%% expert, 80%% medium)")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run of seconds ({QUICK}; --env-steps still applies): checks the script, "
                             "measures nothing worth keeping")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256, help="units of each of the 2 hidden layers (both sides)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"result JSON (default {RESULTS})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if key != "env_steps" or args.env_steps is None:
                setattr(args, key, value)
    try:
        utds = sorted({int(u) for u in args.utd.split(",") if u})
    except ValueError:
        utds = []
    if not utds or min(utds) < 1 or args.rounds < 1 or args.warmup_episodes < 1 or args.offline_episodes < 1 or (
            args.env_steps is not None and args.env_steps < 1):
        parser.error("--utd takes whole numbers >= 1 (e.g. 1,10); --rounds, --warmup-episodes, --offline-episodes "
                     "and --env-steps take whole numbers >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from robot_stack.errors import RobotStackError
    from robot_stack.learn.trainer import resolve_device

    try:
        device = resolve_device(args.device)
        from robot_stack.sim.collect import collect
    except RuntimeError:  # torch's words for a device name it does not know
        print(f"online_speed: unknown device {args.device!r}: use auto, cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    except (RobotStackError, ModuleNotFoundError) as error:
        print(f"online_speed: {error}", file=sys.stderr)
        return 2
    if device.type == "cuda":  # where the step compiles: one process builds several runs, each with its own Adams
        torch._dynamo.config.recompile_limit = 64
    machine_info = machine(["numpy", "torch", "gymnasium", "mujoco", "robot_stack"], device=str(device),
                           device_name=device_name(device), torch_threads=torch.get_num_threads())
    load_before = machine_info["machine"]["load_average"]
    defaults = CUDA_ENV_STEPS if device.type == "cuda" else CPU_ENV_STEPS
    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"SAC on {TASK}, batch {args.batch_size}, 2x{args.hidden}, online ratio {ONLINE_RATIO}, "
          f"load average {load_before[0]:.2f}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="online_speed.") as folder:
        dataset_path = Path(folder) / f"{TASK}.zarr"
        dataset = collect(TASK, dataset_path, args.offline_episodes, mix={"expert": 0.2, "medium": 0.8},
                          seed=args.seed, progress=False)
        horizon = dataset.episode_slice(0).stop - dataset.episode_slice(0).start - 1
        checked = check_on(dataset_path, Path(folder), device, args)
        print(f"check: losses of 2 updates from identical weights: max relative diff {checked['max_rel_diff']:.1e} "
              f"-> {'ok' if checked['ok'] else 'MISMATCH'}", flush=True)
        header = (f"{'utd':>3s} {'side':11s} {'env steps/s':>11s} {'updates/s':>9s} {'loop env steps/s':>16s} "
                  f"{'spread':>6s} {'online.zarr':>11s}")
        print(header)
        print("-" * len(header))
        for utd in utds:
            steps = args.env_steps or defaults.get(utd, defaults[10] * 10 // utd)  # other UTDs: UTD 10's updates
            row = run_utd(utd, dataset_path, Path(folder), device, steps, horizon, args)
            rows.append(row)
            for side in ("robot_stack", "plain"):
                figures = row[side]
                per_round = figures["round_loop_env_steps_per_s"]
                spread = max(per_round) / max(min(per_round), 1e-9)
                share = f"{figures['dataset_commit_share']:.0%}" if "dataset_commit_share" in figures else "-"
                print(f"{utd:3d} {side:11s} {figures['env_steps_per_s']:11.1f} {figures['updates_per_s']:9.1f} "
                      f"{figures['loop_env_steps_per_s']:16.1f} {spread:6.2f} {share:>11s}")
            ratio = row["ratio"]
            print(f"{utd:3d} {'ratio':11s} {ratio['env_steps_per_s']:11.2f} {ratio['updates_per_s']:9.2f} "
                  f"{ratio['loop_env_steps_per_s']:16.2f}", flush=True)
            for message in row["messages"]:
                print(f"    {message}")
    print("env steps/s: collection only (loop time less update time); loop env steps/s: the whole loop; "
          "ratio = robot_stack / plain; spread: fastest / slowest round of the loop; online.zarr: share of "
          "robot_stack's collection time spent committing its episodes to the online dataset")
    machine_info["machine"]["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    result = {
        "benchmark": "online_speed",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/online_speed.py", *sys.argv[1:]]),
        **machine_info,
        "settings": {"algo": "sac", "task": TASK, "batch_size": args.batch_size, "hidden_dims": [args.hidden] * 2,
                     "online_ratio": ONLINE_RATIO, "offline_episodes": args.offline_episodes, "horizon": horizon,
                     "warmup_episodes": args.warmup_episodes, "rounds": args.rounds, "utd": utds, "seed": args.seed,
                     "quick": args.quick},
        "check": checked,
        "rows": rows,
    }
    write_result(args.out, result)
    return 0


def check_on(dataset: Path, folder: Path, device: torch.device, args: Any) -> dict[str, Any]:
    """The check on the run's offline replay (states normalized, actions in [-1, 1]) of a config like the runs'."""
    from robot_stack.data import Dataset
    from robot_stack.learn.observations import build_spec
    from robot_stack.learn.replay import build_replay

    config = make_config(dataset, folder / "check", device, 1, 1, args)
    opened = Dataset.open(dataset)
    spec = build_spec(opened, [], [])
    return check(config, spec, build_replay(opened, spec, "sim", device=device), device)


if __name__ == "__main__":
    sys.exit(main())
