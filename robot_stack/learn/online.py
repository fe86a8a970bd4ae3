"""Offline-to-online training: the offline phase, the switch, and the online phase, in one run folder.

    offline phase   config.steps updates on the dataset (Trainer's loop; 0 skips it, as RLPD does)
    switch          checkpoints/switch.pt (the pre-trained policy), algorithm.start_online() (WSRL drops its
                    conservative penalty), the offline data dropped when online_ratio is 1 (WSRL)
    warm-up         the first warmup_steps env steps are collected by the frozen pre-trained policy with no
                    updates (WSRL's K, Zhou et al. 2024), rounded up to whole episodes
    online phase    per env step `utd` updates on batches from MixedSampler, until online_steps env steps
                    (warm-up included)

OnlineRun holds a run and its online replay and offers the steps above to a driver: `run_online` is the
driver for a sim target (``sim:TASK[:PRESET]``, a gymnasium env of the sim, several stepped side by side when
num_envs > 1); robot_stack.online.robot drives it from episodes a recorder commits on a robot. In a sim run
every online episode is also committed to a Zarr dataset (default <run>/online.zarr, source "online") with the
offline dataset's robot and features (images only those the run needs), so nothing collected is lost and a
resumed run reloads its online replay from it (an unfinished episode is dropped).

An online episode runs to the env's horizon, horizon + 1 frames, as sim_collect records them: frame f holds the
observation of s_f, the command applied from it (the hold command at the last frame), the env's reward of s_f and
whether the task reported success there; the episode succeeded if it did at any frame. Logs: eval.jsonl rows with
phase / step (updates) / env_steps, TensorBoard online/*, curve.png (success rate and return over env steps, the
switch marked), result.json's "online" summary, losses.jsonl (the loss means every log_every updates, with
phase and env_steps: a hybrid run's dynamics_ratio and dynamics_gap of its sim transitions over training).

Hybrid sim-real training (robot_stack.learn.algorithms.h2o, `train --sim`) is this loop with no offline phase: the
dataset is the real data, the sim target collects the sim data, every batch mixes both (Batch.online tells them
apart), and evaluations run in the dataset's dynamics (evaluate.evaluation_dynamics).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import DatasetError, LearnError, RobotStackError
from robot_stack.learn.evaluate import SIM_ENV
from robot_stack.learn.observations import env_key
from robot_stack.learn.online_replay import Episode, MixedSampler, OnlineReplay
from robot_stack.learn.trainer import Trainer

ONLINE_DATASET = "online.zarr"
LabelModels = Callable[[Dataset, str], Any]
"""(dataset, label run) -> its reward model (robot_stack.label.apply.label_reward_model's signature)."""
MAX_EPISODE_STEPS = 1_000  # room the online replay keeps per env beyond online_steps: the last episodes overrun it
SUCCESS_AT = 0.9  # result.json's env_steps_to_90: the first evaluation at or above this success rate
_TRAINING_SEEDS = 1_000_000  # online episodes reset with seeds below the evaluation seeds (eval_seed and up)


def parse_target(online: str) -> tuple[str, str | None]:
    """"sim:TASK[:PRESET]" -> (TASK, PRESET or None)."""
    parts = online.split(":")
    if parts[0] != "sim" or len(parts) not in (2, 3) or not parts[1] or (len(parts) == 3 and not parts[2]):
        raise LearnError(f"online target {online!r}: use sim:TASK or sim:TASK:PRESET (e.g. sim:reach2d, sim:lift:real)")
    return parts[1], parts[2] if len(parts) == 3 else None


class OnlineRun:
    """A Trainer's run with an online phase: pretrain(), switch(), then add_episode() / update(n) as data comes,
    act() to collect, evaluate(), save_checkpoint(), finish(). `step` counts gradient updates (both phases),
    `env_steps` the online transitions added (warm-up included)."""

    def __init__(self, trainer: Trainer, label_models: LabelModels | None = None) -> None:
        """label_models(dataset, run) -> a model with .rewards(frames) [T]: how a labels/<run> reward scores online
        episodes (robot_stack.label.apply.label_reward_model; the layer above passes it in, as learn sits below label)."""
        config = trainer.config
        if not config.online:
            raise LearnError("this run has no online phase: give it an online target (--online sim:TASK or robot)")
        if config.algo == "bc":
            raise LearnError("--online needs an algorithm that learns from rewards: bc only imitates; use iql, calql, "
                             "rlpd or wsrl (or td3bc, cql)")
        self.trainer, self.config, self.spec = trainer, config, trainer.spec
        self.algorithm, self.device, self.run_dir = trainer.algorithm, trainer.device, trainer.run_dir
        self.reward_offset = float(trainer.reward_offset)
        saved = trainer.online_state or {}
        self.phase: str = saved.get("phase", "offline")
        self.checkpoint_episodes = int(saved.get("episodes", 0))  # online episodes the resumed checkpoint had seen
        self.step = trainer.start_step
        self.env_steps = self.episodes_added = 0
        self.started_online = False
        capacity = 2 * (config.online_steps + config.num_envs * MAX_EPISODE_STEPS)  # frames <= 2 x transitions
        self.online = OnlineReplay(self.spec, capacity, gamma=config.gamma, n_step=config.n_step, device=self.device)
        self.sampler = MixedSampler(trainer.replay, self.online, config.online_ratio)
        trainer.batches = self.sampler
        self.target: tuple[str, str | None] | None = None
        if config.online.startswith("sim:"):
            self.target = parse_target(config.online)
            task, preset = self.target
            # Evaluations run in the online target's task, so the curve's points are comparable, and in its dynamics
            # (the dataset's for hybrid sim-real training: evaluate.evaluation_dynamics, resolved by the trainer).
            trainer.task = task
        self._label_model: Any = None
        self._label_models = label_models
        if config.reward.startswith("labels/") and label_models is None:
            raise LearnError(f"reward {config.reward} online needs the label run's model applied to each new episode: "
                             "run it through robot-stack train (or pass label_models=robot_stack.label.apply."
                             "label_reward_model)")
        trainer.open_run()
        self._note_state()

    # -- the phases --------------------------------------------------------------------------------------------

    def pretrain(self) -> None:
        """The offline phase to config.steps updates; nothing when it is done already."""
        if self.phase != "offline" or self.step >= self.config.steps:
            return
        self.trainer.eval_fields = {"phase": "offline", "env_steps": 0}
        self.trainer.train_offline()
        self.step = self.config.steps
        self._note_state()

    def switch(self) -> None:
        """Offline -> online: switch.pt, algorithm.start_online(), offline data dropped at online_ratio 1.

        Called again after a resume that lands in the online phase (start_online again, no new switch.pt)."""
        if self.started_online:
            return
        if self.phase == "offline":
            if not self._evaluations("offline"):  # no offline phase (steps 0): the curve starts at the initial policy
                self.trainer.eval_fields = {"phase": "offline", "env_steps": 0}
                self.evaluate()
            self.trainer.online_state = {"phase": "offline", "env_steps": 0, "episodes": 0}
            self.trainer.save_checkpoint(self.step, name="switch")
        self.algorithm.start_online()
        if self.config.online_ratio != "proportional" and float(self.config.online_ratio) == 1.0:
            self.sampler.drop_offline()
            self.trainer.replay = None
        self.phase, self.started_online = "online", True
        self._note_state()

    @property
    def in_warmup(self) -> bool:
        """Whether the next episode is a warm-up one: frozen pre-trained policy, no updates."""
        return self.env_steps < self.config.warmup_steps

    @property
    def done(self) -> bool:
        return self.env_steps >= self.config.online_steps

    def add_episode(self, episode: Episode, log: bool = True) -> None:
        """Put a finished online episode into the online replay (the run's reward offset applied); env_steps grows
        by its transitions. log: its return and success go to TensorBoard (False when reloading on a resume)."""
        embeddings = self._embeddings(episode.observations) if self.spec.embeddings else None
        self.online.add_episode(episode, self.reward_offset, embeddings)
        self.env_steps += episode.transitions
        self.episodes_added += 1
        writer = self.trainer.writer
        if log and writer:
            writer.add_scalar("online/episode_return", float(np.sum(episode.reward[1:])), self.env_steps)
            writer.add_scalar("online/success", float(episode.success), self.env_steps)
        self._note_state()

    def update(self, n: int) -> dict[str, float] | None:
        """n gradient updates on mixed batches; the loss means when a log_every boundary was crossed, else None.

        Nothing happens while the sampler has no data (online_ratio 1 before the first online episode)."""
        if n <= 0 or not self.sampler.ready:
            return None
        config, trainer = self.config, self.trainer
        step_function, every, total = trainer.step_function, self.algorithm.actor_every, trainer.schedule_steps()
        means = None
        for _ in range(n):
            self.algorithm.schedule(self.step, total)
            step_function((self.step + 1) % every == 0)
            self.step += 1
            if self.step % config.log_every == 0:
                means = self._read_losses()
            if self.step % config.checkpoint_every == 0:
                self.save_checkpoint()
        return means

    def act(self, observations: dict[str, np.ndarray], explore: bool = True) -> np.ndarray:
        """Env observations batched [N, ...] (env keys) -> robot commands float64 [N, A] within the command bounds.

        explore: the algorithm's explore() (its stochastic collection policy; act() where it has none), else act()."""
        spec = self.spec
        values = {name: np.asarray(observations[env_key(name)]) for name in spec.state}
        embeddings = None
        if spec.embeddings:
            embeddings = self._embeddings({name: np.asarray(observations[env_key(name)]) for name in spec.embeddings})
        tensors = {"state": torch.as_tensor(spec.state_from(values, embeddings), device=self.device)}
        for name in spec.images:
            tensors[name] = torch.as_tensor(np.ascontiguousarray(observations[env_key(name)]), device=self.device)
        policy = self.algorithm.explore if explore else self.algorithm.act
        self.algorithm.train(False)
        try:
            with torch.no_grad():
                action = policy(tensors)
        finally:
            self.algorithm.train(True)
        return spec.unscale(action.float().cpu().numpy())

    def evaluate(self) -> dict[str, Any] | None:
        """A sim evaluation now (eval.jsonl row with phase / step / env_steps); None without a sim task."""
        trainer = self.trainer
        if trainer.task is None or self.config.eval_every < 0:
            return None
        if self.phase == "online":
            trainer.eval_fields = {"phase": "online", "env_steps": self.env_steps}
        result = trainer._evaluate(self.step, trainer.writer)
        if trainer.writer:
            trainer.writer.add_scalar("online/eval_success_rate", result["success_rate"], self.env_steps)
            trainer.writer.add_scalar("online/eval_return", result["mean_return"], self.env_steps)
        return result

    def save_checkpoint(self) -> Path:
        """checkpoints/step_<updates>.pt and latest.pt with the online state (phase, env_steps, episodes)."""
        self._note_state()
        return self.trainer.save_checkpoint(self.step)

    def finish(self, seconds: float = 0.0) -> dict[str, Any]:
        """Final evaluation (unless one was made at these env steps), checkpoint, curve.png, result.json."""
        trainer, config = self.trainer, self.config
        rows = self._evaluations()
        last = rows[-1] if rows else None
        if last is None or last.get("phase") != self.phase or last.get("env_steps") != self.env_steps:
            last = self.evaluate() or last
        self.save_checkpoint()
        rows = self._evaluations()
        curve = write_curve(rows, self.run_dir / "curve.png", config.warmup_steps, f"{config.algo} {config.online}")
        online = [row for row in rows if row.get("phase") == "online"]
        offline = [row for row in rows if row.get("phase") == "offline"]
        reached = [row["env_steps"] for row in offline[-1:] + online if row["success_rate"] >= SUCCESS_AT]
        summary = {"target": config.online, "env_steps": self.env_steps, "episodes": self.episodes_added,
                   "updates": self.step - config.steps, "utd": config.utd, "online_ratio": config.online_ratio,
                   "warmup_steps": config.warmup_steps,
                   "offline_success_rate": offline[-1]["success_rate"] if offline else None,
                   "final_success_rate": online[-1]["success_rate"] if online else None,
                   "final_return": online[-1]["mean_return"] if online else None,
                   "env_steps_to_90": reached[0] if reached else None,
                   "curve": str(curve) if curve else None}
        if trainer.writer:
            trainer.writer.close()
        result = {"algo": config.algo, "dataset": str(trainer.dataset.path), "dataset_fingerprint": trainer.fingerprint,
                  "steps": self.step, "seed": config.seed, "seconds": round(seconds, 2), "device": str(self.device),
                  "evaluation": None if last is None else {k: v for k, v in last.items() if k != "rows"},
                  "run_dir": str(self.run_dir), "online": summary}
        (self.run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    # -- episodes from a dataset -------------------------------------------------------------------------------

    def episode_features(self) -> list[str]:
        """Dataset features an Episode of this run carries (see episode_features)."""
        return episode_features(self.trainer)

    def episodes_from_dataset(self, dataset: Dataset, start: int = 0) -> list[Episode]:
        """Committed episodes from index `start` of an online dataset as Episodes with this run's reward source
        (sim: the recorded reward feature; success: 1 at the last frame of a successful episode; labels/<run>: the
        label run's model on the frames), interventions from data/intervention when it is there."""
        names = self.episode_features()
        missing = [name for name in names + [self.spec.action] if name not in dataset.features]
        if missing:
            raise LearnError(f"{dataset.path} lacks feature(s) {missing} this run needs")
        success = dataset.success
        episodes = []
        for index in range(start, dataset.n_episodes):
            where = dataset.episode_slice(index)
            observations = {name: dataset.frames(name, where.start, where.stop) for name in names}
            frames = where.stop - where.start
            intervention = (dataset.frames("intervention", where.start, where.stop).astype(bool)
                            if "intervention" in dataset.features else None)
            episode = Episode(observations, dataset.frames(self.spec.action, where.start, where.stop).reshape(frames, -1),
                              np.zeros(frames, np.float32), bool(success[index] == 1), intervention)
            episode.reward = self.episode_rewards(episode, dataset, where)
            episodes.append(episode)
        return episodes

    def episode_rewards(self, episode: Episode, dataset: Dataset | None = None, where: slice | None = None,
                        sim_reward: np.ndarray | None = None) -> np.ndarray:
        """float32 [T] rewards of an episode under the run's reward source, before the offset: `sim_reward` (the
        env's) or the dataset's recorded reward feature for "sim", the success rule, or the label run's model."""
        reward, frames = self.config.reward, episode.frames
        if reward == "sim":
            if sim_reward is not None:
                return np.asarray(sim_reward, np.float32).reshape(frames)
            recorded = [n for n, s in dataset.features.items() if s.kind == "reward"] if dataset is not None else []
            if not recorded:
                raise LearnError("reward sim: the online data has no recorded sim reward; use --reward success or labels/<run>")
            return dataset.frames(recorded[0], where.start, where.stop).reshape(frames).astype(np.float32)
        if reward == "success":
            out = np.zeros(frames, np.float32)
            out[-1] = 1.0 if episode.success else 0.0
            return out
        if reward.startswith("labels/"):
            return np.asarray(self._label_reward_model().rewards(episode.observations), np.float32).reshape(frames)
        raise LearnError(f"reward {reward!r} cannot be computed for online episodes: use sim, success or labels/<run>")

    # -- internals ---------------------------------------------------------------------------------------------

    def _label_reward_model(self) -> Any:
        if self._label_model is None:
            self._label_model = self._label_models(self.trainer.dataset, self.config.reward[len("labels/"):])
        return self._label_model

    def _embeddings(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embed = self.trainer._embed_function()
        return {name: embed(name, np.asarray(observations[name])) for name in self.spec.embeddings}

    def _read_losses(self) -> dict[str, float]:
        means = self.trainer.step_function.read()
        writer = self.trainer.writer
        if writer:
            for key, value in means.items():
                writer.add_scalar(f"train/{key}", value, self.step)
        with open(self.run_dir / "losses.jsonl", "a") as file:  # hybrid runs' dynamics-ratio weights among them
            file.write(json.dumps({"step": self.step, "phase": self.phase, "env_steps": self.env_steps} | means) + "\n")
        if not all(math.isfinite(v) for v in means.values()):
            self.save_checkpoint()
            raise LearnError(f"losses went non-finite at update {self.step} ({means}); lower the learning rates or "
                             f"check the rewards; checkpoint saved in {self.run_dir}")
        return means

    def _note_state(self) -> None:
        self.trainer.online_state = {"phase": self.phase, "env_steps": self.env_steps, "episodes": self.episodes_added}

    def _evaluations(self, phase: str | None = None) -> list[dict[str, Any]]:
        path = self.run_dir / "eval.jsonl"
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [row for row in rows if "env_steps" in row and (phase is None or row.get("phase") == phase)]


def episode_features(trainer: Trainer) -> list[str]:
    """Dataset features an Episode of a run carries: the state features, the images the policy sees, and for a
    labels/<run> reward every image of the offline dataset (the label model reads one of them)."""
    images = list(trainer.spec.images) + list(trainer.spec.embeddings)
    if trainer.config.reward.startswith("labels/"):
        images += [name for name, spec in trainer.dataset.features.items() if spec.is_image]
    return list(trainer.spec.state) + list(dict.fromkeys(images))


# -- the sim target ------------------------------------------------------------------------------------------------


class SimEnvs:
    """num_envs copies of the target's gymnasium env stepped side by side, one episode each at a time.

    Batched observations {key: [N, ...]}; every env runs to the task's horizon, so the N episodes end together.
    The copies run in subprocesses (gymnasium's AsyncVectorEnv), stepping in parallel, where that pays: a step
    costs more than ASYNC_ABOVE_S (Lift's physics ~7 ms, reach2d's 0.1 ms: measured on the first copy) and this
    process may use a core per env besides the learner's. Otherwise they step here, one after the other (on 2
    loaded cores 2 Lift envs took 42-48 ms a vector step in subprocesses, 31-38 ms here). The reward of the state right after reset
    (frame 0's, which gymnasium's reset does not return) is read from the env's task, for the dataset's record only:
    no transition earns it.
    """

    ASYNC_ABOVE_S = 1e-3

    def __init__(self, task: str, preset: str | None, cameras: list[str], num_envs: int) -> None:
        self.options = {"task": task, "cameras": cameras} | ({"dynamics": preset} if preset else {})
        self.num_envs = num_envs
        self.envs = [make_sim_env(self.options)]
        self.vector: Any = None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if num_envs > 1 and cores > num_envs and _step_seconds(self.envs[0]) > self.ASYNC_ABOVE_S:
            from gymnasium.vector import AsyncVectorEnv, AutoresetMode

            self.envs[0].close()
            self.envs = []
            # spawn: the parent may hold CUDA and torch's threads, which a forked child must not inherit.
            self.vector = AsyncVectorEnv([functools.partial(make_sim_env, self.options)] * num_envs, context="spawn",
                                         autoreset_mode=AutoresetMode.DISABLED)
        else:
            self.envs += [make_sim_env(self.options) for _ in range(num_envs - 1)]

    @property
    def parallel(self) -> bool:
        """Whether the envs step in subprocesses."""
        return self.vector is not None

    def reset(self, seeds: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Observations, rewards float [N] and success bool [N] of the states after reset."""
        if self.vector is not None:
            observation, info = self.vector.reset(seed=list(seeds))
            return observation, np.asarray(info["start_reward"], np.float64), np.asarray(info["success"], bool)
        results = [env.reset(seed=seed) for env, seed in zip(self.envs, seeds)]
        return (_stack([obs for obs, _ in results]), np.asarray([i["start_reward"] for _, i in results], np.float64),
                np.asarray([bool(i.get("success")) for _, i in results]))

    def step(self, commands: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Observations, rewards [N], success [N], done [N] after applying commands [N, A]."""
        if self.vector is not None:
            observation, reward, terminated, truncated, info = self.vector.step(np.asarray(commands))
            return (observation, np.asarray(reward, np.float64), np.asarray(info["success"], bool),
                    np.logical_or(terminated, truncated))
        results = [env.step(command) for env, command in zip(self.envs, commands)]
        return (_stack([r[0] for r in results]), np.asarray([r[1] for r in results], np.float64),
                np.asarray([bool(r[4].get("success")) for r in results]), np.asarray([r[2] or r[3] for r in results]))

    def close(self) -> None:
        if self.vector is not None:
            self.vector.close()
        for env in self.envs:
            env.close()


def make_sim_env(options: dict[str, Any]) -> Any:
    """The sim's gymnasium env with `options` (task, cameras, dynamics), its reset info carrying start_reward."""
    import gymnasium

    try:
        env = gymnasium.make(SIM_ENV, **options)
    except ModuleNotFoundError as error:
        raise LearnError(f"the online target needs robot_stack's sim extra ({error}): pip install 'robot_stack[sim]'") from None
    return _start_reward_wrapper()(env)


def _step_seconds(env: Any, steps: int = 5) -> float:
    """Seconds one step of `env` takes (the median of a few hold-still steps after a reset)."""
    env.reset(seed=0)
    hold = np.zeros(env.action_space.shape, env.action_space.dtype)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        env.step(np.clip(hold, env.action_space.low, env.action_space.high))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([np.asarray(obs[key]) for obs in observations]) for key in observations[0]}


@functools.cache
def _start_reward_wrapper() -> type:
    """The wrapper class, made on first use: gymnasium is the sim extra's, imported only when an env is made."""
    import gymnasium

    class StartReward(gymnasium.Wrapper):
        """Adds info["start_reward"] at reset: the task's reward of the state reset put the env in."""

        def reset(self, **kwargs: Any) -> Any:
            observation, info = self.env.reset(**kwargs)
            task = getattr(self.env.unwrapped, "task", None)
            info = dict(info) | {"start_reward": float(task.reward()) if hasattr(task, "reward") else 0.0}
            return observation, info

    return StartReward


class OnlineDataset:
    """The online episodes' Zarr dataset: the offline dataset's robot, rate, tasks and features (images only those
    the run needs), episodes committed with source "online"."""

    def __init__(self, run: OnlineRun, path: Path) -> None:
        offline = run.trainer.dataset
        keep = set(run.episode_features())
        self.features = [spec for name, spec in offline.features.items()
                         if not (spec.is_image and name not in keep) and not _stale_of_dropped(name, offline, keep)]
        self.path, self.record_hz = path, offline.record_hz
        self.task = offline.tasks[0] if offline.tasks else None
        if path.exists():
            try:
                stored = Dataset.open(path)
            except DatasetError as error:
                raise LearnError(f"cannot append online episodes to {path}: {error}") from None
            if stored.unfinished_frames:  # an episode the killed run never committed: dropped, as the module says
                from robot_stack.data import recover

                recover(path, keep=False)
            self.writer = DatasetWriter.open(path, self.features)
        else:
            self.writer = DatasetWriter.create(path, robot=offline.robot, record_hz=offline.record_hz,
                                               features=self.features, tasks=offline.tasks,
                                               provenance={"online": {"offline_dataset": str(offline.path),
                                                                      "fingerprint": run.trainer.fingerprint,
                                                                      "run": str(run.run_dir),
                                                                      "target": run.config.online}})
        self.dataset = Dataset.open(path)
        last = self.dataset.frames("timestamp", self.dataset.n_frames - 1) if self.dataset.n_frames else None
        self.clock = float(last[0]) + 1.0 / self.record_hz if last is not None else 0.0

    def sources_of(self, env_keys: set[str]) -> None:
        """LearnError naming a feature the env cannot fill (a real robot's dataset fine-tuned in a sim)."""
        for spec in self.features:
            if _value_kind(spec, env_keys) is None:
                raise LearnError(f"the offline dataset's feature {spec.name!r} is not something the sim env gives "
                                 f"(it gives {sorted(env_keys)}): fine-tune in the sim task the dataset was recorded in")

    def commit(self, frames: dict[str, np.ndarray], action: np.ndarray, reward: np.ndarray, success_frames: np.ndarray,
               success: bool, notes: str) -> None:
        """Append one episode's frames (observations by env key [T, ...]) and commit it (source online)."""
        count = len(action)
        data = {}
        keys = set(frames)
        values = {"time": self.clock + np.arange(count) / self.record_hz, "action": action, "reward": reward,
                  "success": success_frames, "false": np.zeros(count, bool)}
        for spec in self.features:
            kind = _value_kind(spec, keys)
            value = values[kind] if kind in values else frames[kind]
            data[spec.name] = np.asarray(value).reshape(count, *spec.shape).astype(spec.dtype)
        self.writer.append_frames(data)
        self.writer.commit_episode(self.task, success, operator="online", notes=notes, source="online")
        self.clock += count / self.record_hz

    def close(self) -> None:
        if self.writer.episode_frames:
            self.writer.discard_episode()
        self.writer.close()


def _stale_of_dropped(name: str, offline: Dataset, keep: set[str]) -> bool:
    base = name[len("stale."):] if name.startswith("stale.") else None
    return base is not None and offline.features.get(base) is not None and offline.features[base].is_image and base not in keep


def _value_kind(spec: FeatureSpec, env_keys: set[str]) -> str | None:
    """Where a dataset feature's values come from in a sim episode: an env observation key, or time / action /
    reward / success / false (flags the sim never raises: stale data, interventions)."""
    if env_key(spec.name) in env_keys:
        return env_key(spec.name)
    if spec.kind in ("time", "action", "reward"):
        return spec.kind
    if spec.topic == "/sim/success":
        return "success"
    if spec.name.startswith("stale.") or spec.name == "intervention":
        return "false"
    return None


def run_online(trainer: Trainer, progress: bool = True, label_models: LabelModels | None = None) -> dict[str, Any]:
    """A run with a sim online target, start to end (or from where a resumed one stopped); its result.json.
    label_models: as OnlineRun takes it (needed for a labels/<run> reward)."""
    config = trainer.config
    if not config.online.startswith("sim:"):
        raise LearnError(f"run_online drives sim targets; online {config.online!r} runs through "
                         "robot_stack.online.robot (robot-stack train --online robot)")
    task, preset = parse_target(config.online)
    resumed = trainer.start_step > 0 or trainer.online_state is not None
    path = Path(config.online_dataset) if config.online_dataset else trainer.run_dir / ONLINE_DATASET
    if path.exists() and not resumed:
        raise LearnError(f"{path} exists: a new run writes its online episodes to a new dataset; choose another "
                         "online_dataset (or resume the run that wrote it)")
    # The env before anything is written or trained: an unknown task or preset fails now, not after pre-training.
    cameras = [f"{name[len('image.'):]}:{shape[0]}x{shape[1]}" for name, shape in
               ((name, trainer.dataset.features[name].shape) for name in episode_features(trainer)
                if name.startswith("image."))]
    try:
        envs = SimEnvs(task, preset, cameras, config.num_envs)
        probe, _, _ = envs.reset([0] * config.num_envs)
    except RobotStackError as error:
        raise LearnError(f"online target {config.online}: {error}") from None
    started = time.perf_counter()
    dataset = None
    try:
        missing = [name for name in trainer.spec.state if env_key(name) not in probe]
        if missing:
            raise LearnError(f"online target {config.online} does not observe {missing}, which the policy needs: "
                             f"fine-tune in the sim task the dataset was recorded in ({trainer.dataset.robot.get('sim_task')})")
        run = OnlineRun(trainer, label_models)
        dataset = OnlineDataset(run, path)
        dataset.sources_of(set(probe))
        run.pretrain()
        for episode in run.episodes_from_dataset(dataset.dataset):  # a resumed run: the episodes it collected
            run.add_episode(episode, log=False)
        if resumed and run.done and (run.run_dir / "result.json").is_file():
            raise LearnError(f"run {run.run_dir} already collected {run.env_steps} env steps: resume it with "
                             "--online-steps above that")
        run.switch()
        _online_phase(run, envs, dataset, progress)
    except KeyboardInterrupt:
        if dataset is not None:
            checkpoint = run.save_checkpoint()
            trainer.log(f"interrupted at {run.env_steps} env steps: checkpoint {checkpoint}; continue with "
                        f"--resume {run.run_dir}")
        raise
    finally:
        envs.close()
        if dataset is not None:
            dataset.close()
    return run.finish(time.perf_counter() - started)


def _online_phase(run: OnlineRun, envs: SimEnvs, dataset: OnlineDataset, progress: bool) -> None:
    from tqdm import tqdm

    config, writer = run.config, run.trainer.writer
    every = config.online_eval_every
    next_eval = (run.env_steps // every + 1) * every if every else None
    bar = tqdm(total=config.online_steps, initial=min(run.env_steps, config.online_steps), unit="env step",
               desc=f"{config.algo} online {config.online}", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    hold = np.asarray((run.trainer.dataset.robot.get("command_spec") or {}).get("hold")
                      or np.zeros(run.spec.action_dim), np.float64)
    last_eval = None
    try:
        while not run.done:
            warmup = run.in_warmup
            seeds = [_episode_seed(config.seed, run.episodes_added + i) for i in range(envs.num_envs)]
            observation, reward, success = envs.reset(seeds)
            frames, commands, rewards, successes = [observation], [], [reward], [success]
            started, updates = time.perf_counter(), run.step
            done = np.zeros(envs.num_envs, bool)
            while not done.all():
                command = run.act(observation, explore=True)
                observation, reward, success, done = envs.step(command)
                if done.any() and not done.all():
                    raise LearnError(f"the {envs.num_envs} envs of {config.online} ended their episodes at different "
                                     "steps (an env that terminates early?): run it with --num-envs 1")
                frames.append(observation)
                commands.append(command)
                rewards.append(reward)
                successes.append(success)
                if not warmup:
                    run.update(config.utd * envs.num_envs)
                bar.update(envs.num_envs)
            commands.append(np.broadcast_to(hold, commands[-1].shape))
            seconds = time.perf_counter() - started
            for i in range(envs.num_envs):
                observations = {key: np.stack([frame[key][i] for frame in frames]) for key in frames[0]}
                action, success_frames = np.stack([c[i] for c in commands]), np.asarray([s[i] for s in successes])
                sim_reward = np.asarray([r[i] for r in rewards], np.float32)
                succeeded = bool(success_frames.any())
                dataset.commit(observations, action, sim_reward, success_frames, succeeded,
                               notes=f"seed {seeds[i]}, {'warm-up' if warmup else 'online'}, update {run.step}")
                features = {name: np.asarray(observations[env_key(name)]).astype(run.trainer.dataset.features[name].dtype)
                            for name in run.episode_features()}
                episode = Episode(features, action.astype(np.float32), np.zeros(len(action), np.float32), succeeded)
                episode.reward = run.episode_rewards(episode, sim_reward=sim_reward)
                run.add_episode(episode)
            if writer:
                steps = envs.num_envs * (len(frames) - 1)
                writer.add_scalar("online/env_steps_per_s", steps / max(seconds, 1e-9), run.env_steps)
                writer.add_scalar("online/updates_per_s", (run.step - updates) / max(seconds, 1e-9), run.env_steps)
            if next_eval is not None and run.env_steps >= next_eval:
                last_eval = run.evaluate()
                next_eval = (run.env_steps // every + 1) * every
                run.save_checkpoint()
            if last_eval:
                bar.set_postfix({"success": f"{last_eval['success_rate']:.0%}"}, refresh=False)
    finally:
        bar.close()


def _episode_seed(seed: int, episode: int) -> int:
    """Reset seed of online episode `episode` of a run seeded `seed`: below the evaluation seeds, distinct per run."""
    return int(np.random.default_rng([seed, episode]).integers(_TRAINING_SEEDS))


def write_curve(rows: list[dict[str, Any]], path: Path, warmup_steps: int = 0, title: str = "") -> Path | None:
    """curve.png: success rate and mean return over env steps (the last offline evaluation at 0, the switch marked)."""
    offline = [row for row in rows if row.get("phase") == "offline"][-1:]
    points = offline + [row for row in rows if row.get("phase") == "online"]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row["env_steps"] for row in points]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, label in ((axes[0], "success_rate", "success rate"), (axes[1], "mean_return", "return")):
        axis.plot(x, [row[key] for row in points], marker="o", markersize=3)
        axis.axvline(0, color="tab:red", linestyle="--", label="switch (offline -> online)")
        if warmup_steps:
            axis.axvline(warmup_steps, color="tab:gray", linestyle=":", label="end of warm-up")
        axis.set_xlabel("environment steps")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
