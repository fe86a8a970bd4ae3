"""The training loop every algorithm shares: data onto the device, fast steps, logs, checkpoints, sim evaluation.

A run folder holds everything needed to understand and continue it:

    runs/<name>/config.yaml          the full TrainConfig (algorithm defaults included)
    runs/<name>/run.json             dataset path + fingerprint, reward source (+ label run provenance, or
                                     for --reward success each episode's outcome and which were marked),
                                     observation spec (features, normalization, action bounds), device, versions
    runs/<name>/checkpoints/         step_<N>.pt and latest.pt (state dicts, RNG, spec; torch.load weights_only)
    runs/<name>/tb/                  TensorBoard scalars (losses, updates/s, eval/success_rate, eval/return)
    runs/<name>/eval.jsonl           one line per evaluation
    runs/<name>/result.json          the final evaluation, steps, wall time, updates/s

The hot loop samples on the device and updates without a host sync; losses are summed on the device and
read every log_every steps. On CUDA the step is compiled and captured in a CUDA graph (config: compile,
cuda_graphs).
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robot_stack import __version__
from robot_stack.data import Dataset, dataset_damage
from robot_stack.errors import DatasetError, LearnError
from robot_stack.learn.algorithms import algorithm_class
from robot_stack.learn.algorithms.base import Algorithm
from robot_stack.learn.config import TrainConfig, config_from_dict, resumed_config
from robot_stack.learn.evaluate import PolicyRunner, evaluate, evaluation_dynamics, make_env, sim_task_of
from robot_stack.learn.observations import ObservationSpec, build_spec
from robot_stack.learn.replay import build_replay, reward_offset

CHECKPOINT_FORMAT = "robot_stack.checkpoint"
CHECKPOINT_VERSION = 1


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available, else cpu; a named CUDA device that is missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LearnError(f"device {name!r}: this machine has no CUDA GPU torch can use; train with --device cpu")
    return device


class StepFunction:
    """sample + update + loss sums, eager, compiled, or replayed from a CUDA graph (one per update_actor value
    and sampler mode: `replay` may be a ReplayBuffer or an online_replay.MixedSampler, whose `mode` says which
    buffers a batch comes from).

    The losses of each step are added into device tensors inside the step (so inside the graph too);
    `read()` returns their means since the last read: the loop's one host sync, every log_every steps.
    """

    def __init__(self, replay: Any, algorithm: Algorithm, config: TrainConfig, device: torch.device,
                 log: Callable[[str], None]) -> None:
        self.replay, self.algorithm, self.batch_size = replay, algorithm, config.batch_size
        self.autocast = config.bf16 and device.type == "cuda"
        use = {"on": True, "off": False, "auto": device.type == "cuda"}
        self.compiled = use[config.compile]
        self.graphed = use[config.cuda_graphs] and device.type == "cuda"
        if use[config.cuda_graphs] and device.type != "cuda":
            log("cuda_graphs: on needs a CUDA device; running without graphs")
        function = self._step
        if self.compiled:
            # Default mode (no inductor CUDA-graph trees): the whole step (sampling, backward, optimizer) is
            # captured in one graph below.
            function = torch.compile(self._step, dynamic=False)
        self.function = function
        self.graphs: dict[tuple[bool, str], torch.cuda.CUDAGraph] = {}
        self.sums: dict[str, Tensor] = {}  # running loss sums, allocated on the first step (fixed addresses)
        self.keys: dict[tuple[bool, str], list[str]] = {}  # the losses each kind of step returns
        self.counts: dict[str, int] = {}
        self.log = log

    def _step(self, update_actor: bool) -> list[str]:
        batch = self.replay.sample(self.batch_size)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            metrics = self.algorithm.update(batch, update_actor)
        for key, value in metrics.items():
            if key not in self.sums:  # only on the eager first step of each kind: the sums keep their addresses
                self.sums[key] = torch.zeros((), device=value.device)
            self.sums[key].add_(value.float())
        return list(metrics)

    def __call__(self, update_actor: bool) -> None:
        kind = (update_actor, getattr(self.replay, "mode", ""))
        if kind not in self.keys:
            self.keys[kind] = self._step(update_actor)  # eager: learns the loss names, allocates the sums
            if self.graphed:
                self._capture(kind)
        elif kind in self.graphs:
            self.graphs[kind].replay()
        else:
            self.function(update_actor)
        for key in self.keys[kind]:
            self.counts[key] = self.counts.get(key, 0) + 1

    def _capture(self, kind: tuple[bool, str]) -> None:
        update_actor = kind[0]
        # The documented whole-network capture: warm up on a side stream (optimizer state, compiled kernels), then
        # capture. The 3 warm-up updates are real updates the step count does not show (restoring the state
        # instead would swap the optimizer's tensors for new ones that the graph does not use).
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self.function(update_actor)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.function(update_actor)
            self.graphs[kind] = graph
        except RuntimeError as error:  # a model with host syncs cannot be captured: run it as it is
            self.log(f"CUDA graph capture failed ({str(error).splitlines()[0]}); running without graphs")
            self.graphed = False
        with torch.no_grad():
            for value in self.sums.values():  # the warm-up's losses are not the window's
                value.zero_()

    def read(self) -> dict[str, float]:
        """Mean of each loss since the last read (a host sync), and reset the sums in place."""
        means = {key: float(value) / max(self.counts.get(key, 0), 1) for key, value in self.sums.items()}
        for value in self.sums.values():
            value.zero_()
        self.counts = {}
        return means


class Trainer:
    """Builds the run from a TrainConfig (or resumes one) and trains it: `Trainer(config).run()`."""

    def __init__(self, config: TrainConfig | None = None, *, resume: str | Path | None = None,
                 steps: int | None = None, changes: dict[str, Any] | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        """A new run from `config`, or the run in folder `resume` continued from its latest checkpoint
        (to `steps` total updates if given, else to its configured steps), with `changes` to its saved config
        (only the fields in config.RESUME_SETTINGS: device, evaluation, steps)."""
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.progress = progress
        self.start_step = 0
        self.initialized_from: dict[str, Any] | None = None  # init_from's checkpoint, step and dataset (run.json)
        self.online_state: dict[str, Any] | None = None  # an online run's phase, env steps, episodes (its checkpoints)
        checkpoint = None
        if resume is not None:
            checkpoint = load_checkpoint(latest_checkpoint(Path(resume)), "cpu")
            config, self.run_dir = resumed_config(config_from_dict(checkpoint["config"]), changes or {}), Path(resume)
            self.start_step = int(checkpoint["step"])
            self.online_state = checkpoint.get("online")
        if config is None:
            raise LearnError("give a TrainConfig or a run folder to resume")
        if steps is not None:
            config.steps = int(steps)
        # An online run's end is its env steps (robot_stack.learn.online checks them); an offline run's its updates.
        if not config.online and self.start_step >= config.steps:
            raise LearnError(f"run {resume} already trained {self.start_step} steps: resume with --steps above that")
        self.config = config
        if not config.dataset:
            raise LearnError("no dataset: give --dataset PATH (a robot_stack Zarr dataset)")
        try:
            self.dataset = Dataset.open(config.dataset)
        except DatasetError as error:
            raise LearnError(f"cannot train on {config.dataset}: {error}") from None
        # Before anything reads the data: missing chunks would load as zeros, NaN would surface as a loss.
        low_dim = [name for name, spec in self.dataset.features.items() if not spec.is_image]
        damage = dataset_damage(self.dataset, decode=low_dim + list(config.images))
        if damage:
            raise LearnError(f"cannot train on {config.dataset}: {damage[0]} (`robot-stack data validate "
                             f"{config.dataset}` lists every problem)")
        self.fingerprint = self.dataset.fingerprint()
        if checkpoint is not None and checkpoint["dataset_fingerprint"] != self.fingerprint:
            raise LearnError(f"{config.dataset} changed since run {resume} started (fingerprint "
                             f"{checkpoint['dataset_fingerprint'][:12]} then, {self.fingerprint[:12]} now): "
                             "start a new run instead of resuming")
        # Marks (robot-stack data mark) change the outcomes without changing the recorded data's fingerprint.
        self.outcomes = self.dataset.success.tolist() if config.reward == "success" else None
        if checkpoint is not None and checkpoint.get("episode_outcomes", self.outcomes) != self.outcomes:
            raise LearnError(f"the episodes' success marks of {config.dataset} changed since run {resume} started "
                             "(robot-stack data mark): its rewards would change mid-run; start a new run instead of resuming")
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        embeddings = self._embeddings()
        self.spec = build_spec(self.dataset, config.observations, config.images, embeddings,
                               config.image_encoder[len("clip:"):] if embeddings else "")
        self.reward_offset = reward_offset(self.dataset, config.reward, config.reward_offset)
        self.replay = build_replay(self.dataset, self.spec, config.reward, n_step=config.n_step, gamma=config.gamma,
                                   embeddings=embeddings, device=self.device, offset=self.reward_offset)
        self.algorithm: Algorithm = algorithm_class(config.algo)(self.spec, config, self.device)
        if checkpoint is not None:
            self.algorithm.load_state_dict(checkpoint["algorithm"])
            _set_rng(checkpoint.get("rng", {}))
        else:
            self.run_dir = Path(config.out) if config.out else default_run_dir(config)
            if (self.run_dir / "checkpoints").exists():
                raise LearnError(f"{self.run_dir} already holds a run: resume it with --resume {self.run_dir}, "
                                 "or choose another --out")
            if config.init_from:
                self.initialized_from = self._initialize_from(Path(config.init_from))
        self.task = None if config.eval_env == "none" else (
            config.eval_env if config.eval_env != "auto" else sim_task_of(self.dataset.robot))
        dynamics = evaluation_dynamics(config, self.dataset.provenance)
        # Extra make_env arguments of evaluations: the dynamics they run in (evaluate.evaluation_dynamics).
        self.env_options: dict[str, Any] = {"dynamics": dynamics} if dynamics else {}
        self.batches: Any = self.replay  # what the step samples from (an online run puts its mixed sampler here)
        self.eval_fields: dict[str, Any] = {}  # added to each eval.jsonl row (an online run's phase and env steps)
        self.writer: Any = None
        self.step_function: StepFunction | None = None

    def _initialize_from(self, source: Path) -> dict[str, Any]:
        """Start this new run from the networks and optimizers of another run's latest checkpoint (or a checkpoint
        file): same algorithm, same observation spec (features, normalization, action bounds). What it came from,
        for run.json."""
        path = latest_checkpoint(source)
        state = load_checkpoint(path, "cpu")
        algo = state["config"]["algo"]
        where = f"--init-from {source}"
        if algo != self.config.algo:
            raise LearnError(f"{where} was trained with {algo}, this run is {self.config.algo}: start from a run of "
                             "the same algorithm")
        if state["spec"] != self.spec.to_json():
            raise LearnError(f"{where} sees other observations or action bounds than this run (features, "
                             "normalization or command bounds differ: another dataset or --obs/--images): start from a "
                             "run on this dataset with the same observations")
        mismatch = _first_mismatch(state["algorithm"]["modules"], self.algorithm.state_dict()["modules"])
        if mismatch:
            raise LearnError(f"{where}: its networks do not fit this run's config ({mismatch}: network sizes or "
                             "algorithm settings differ); keep that run's hidden_dims and algorithm settings")
        self.algorithm.load_state_dict(state["algorithm"])
        return {"path": str(path), "step": int(state["step"]), "dataset_fingerprint": state["dataset_fingerprint"]}

    def _embeddings(self) -> dict[str, np.ndarray] | None:
        config = self.config
        if not config.images or not config.image_encoder.startswith("clip:"):
            return None
        # The label extra (open_clip); imported only when CLIP embeddings are asked for.
        from robot_stack.learn.clip_embed import clip_embeddings

        model = config.image_encoder[len("clip:"):]
        return {name: clip_embeddings(self.dataset, name, model, device=self.device, progress=self.progress)
                for name in config.images}

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train the offline run to its steps, evaluate, write result.json and return it."""
        config = self.config
        if config.online:
            raise LearnError(f"this run has an online phase ({config.online}): run it with "
                             "robot_stack.learn.online.run_online(trainer) (robot-stack train --online does)")
        self.open_run()
        started = time.perf_counter()
        last_eval = self.train_offline()
        seconds = time.perf_counter() - started
        self.save_checkpoint(config.steps)
        if last_eval is None and config.eval_every >= 0 and self.task is not None and config.steps > self.start_step:
            last_eval = self._evaluate(config.steps, self.writer)
        if self.writer:
            self.writer.close()
        result = {"algo": config.algo, "dataset": str(self.dataset.path), "dataset_fingerprint": self.fingerprint,
                  "steps": config.steps, "seed": config.seed, "seconds": round(seconds, 2),
                  "updates_per_s": round((config.steps - self.start_step) / max(seconds, 1e-9), 1),
                  "device": str(self.device), "evaluation": _without_rows(last_eval), "run_dir": str(self.run_dir)}
        (self.run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    def open_run(self) -> None:
        """The run folder, its config and run.json, the TensorBoard writer and the step function."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        self._write_run_files()
        self.writer = _summary_writer(self.run_dir / "tb", self.log)
        self.step_function = StepFunction(self.batches, self.algorithm, self.config, self.device, self.log)

    def schedule_steps(self) -> int:
        """The updates the algorithm's schedules (IQL's cosine actor decay) span: the offline phase's, plus the
        online phase's (online_steps * utd) when there is one, so a fine-tuned actor keeps learning."""
        config = self.config
        return config.steps + (config.online_steps * config.utd if config.online else 0)

    def train_offline(self) -> dict[str, Any] | None:
        """The offline updates from start_step to config.steps (logs, evaluations, checkpoints); the last evaluation."""
        config, algorithm, writer, step_function = self.config, self.algorithm, self.writer, self.step_function
        assert step_function is not None, "open_run() first"
        every, total = algorithm.actor_every, self.schedule_steps()
        window_start, window_steps = time.perf_counter(), 0
        last_eval: dict[str, Any] | None = None
        means: dict[str, float] = {}
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=self.start_step, desc=f"{config.algo} {self.dataset.path.name}",
                   unit="step", disable=not self.progress, dynamic_ncols=True, file=sys.stderr)
        algorithm.train(True)
        step = self.start_step
        try:
            for step in range(self.start_step, config.steps):
                algorithm.schedule(step, total)
                step_function((step + 1) % every == 0)
                window_steps += 1
                done = step + 1
                if done % config.log_every == 0 or done == config.steps:
                    means = step_function.read()  # the loop's one host sync
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    if writer:
                        for key, value in means.items():
                            writer.add_scalar(f"train/{key}", value, done)
                        writer.add_scalar("train/updates_per_s", rate, done)
                    bar.set_postfix(_postfix(means, last_eval), refresh=False)
                    bar.update(window_steps)
                    window_start, window_steps = time.perf_counter(), 0
                    if not all(math.isfinite(v) for v in means.values()):
                        self.save_checkpoint(done)
                        raise LearnError(f"losses went non-finite at step {done} ({means}); lower the learning "
                                         f"rates or check the rewards; checkpoint saved in {self.run_dir}")
                if self._due(done, config.eval_every):
                    last_eval = self._evaluate(done, writer)
                    bar.set_postfix(_postfix(means, last_eval), refresh=False)
                if done % config.checkpoint_every == 0 and done != config.steps:
                    self.save_checkpoint(done)
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint(step)
            self.log(f"interrupted at step {step}: checkpoint {path}; continue with --resume {self.run_dir}")
            raise
        bar.close()
        return last_eval

    def _due(self, done: int, every: int) -> bool:
        if self.task is None or every < 0:
            return False
        return (every > 0 and done % every == 0) or done == self.config.steps

    def _evaluate(self, step: int, writer: Any) -> dict[str, Any]:
        config = self.config
        env = make_env(self.task, self.spec, **self.env_options)
        self.algorithm.train(False)
        try:
            policy = PolicyRunner(self.algorithm.act, self.spec, self.device, self._embed_function())
            result = evaluate(policy, env, config.eval_episodes, config.eval_seed) | {"step": step} | self.eval_fields
        finally:
            env.close()
            self.algorithm.train(True)
        if writer:
            writer.add_scalar("eval/success_rate", result["success_rate"], step)
            writer.add_scalar("eval/return", result["mean_return"], step)
        with open(self.run_dir / "eval.jsonl", "a") as file:
            file.write(json.dumps(result) + "\n")
        return result

    def _embed_function(self) -> Callable[[str, np.ndarray], np.ndarray] | None:
        if not self.spec.embeddings:
            return None
        from robot_stack.learn.clip_embed import embed_images

        model = self.config.image_encoder[len("clip:"):]
        return lambda name, images: embed_images(images, model, device=self.device)

    # -- files -------------------------------------------------------------------------------------------------

    def _write_run_files(self) -> None:
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        reward: dict[str, Any] = {"source": self.config.reward, "offset": self.reward_offset}
        if self.config.reward.startswith("labels/"):
            labels = self.dataset.read_labels(self.config.reward[len("labels/"):])
            reward["label_run"] = json.loads(json.dumps(labels.attrs, default=str))
        if self.outcomes is not None:  # the success marks the rewards came from (1, 0, -1 per episode)
            table = self.dataset.episode_table()
            reward["episode_outcomes"] = self.outcomes
            reward["marked_episodes"] = table["index"][table["marked"]].tolist()
        info = {
            "config": self.config.to_dict(),
            "dataset": {"path": str(self.dataset.path), "fingerprint": self.fingerprint,
                        "episodes": self.dataset.n_episodes, "frames": self.dataset.n_frames,
                        "robot": self.dataset.robot, "transitions": len(self.replay)},
            "reward": reward | {"transition_reward": self.replay.reward_stats()},
            "observation_spec": self.spec.to_json(),
            "device": str(self.device), "eval_task": self.task,
            "eval_dynamics": self.env_options.get("dynamics", "nominal") if self.task else None,
            "initialized_from": self.initialized_from or self._saved_run_info().get("initialized_from"),
            "versions": {"robot_stack": __version__, "torch": torch.__version__},
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")

    def _saved_run_info(self) -> dict[str, Any]:
        """The run.json a resumed run wrote when it began (empty for a new run)."""
        path = self.run_dir / "run.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def save_checkpoint(self, step: int, name: str = "") -> Path:
        """checkpoints/step_<step>.pt (or <name>.pt) and latest.pt, each replaced whole."""
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step,
                 "config": self.config.to_dict(), "spec": self.spec.to_json(),
                 "dataset_fingerprint": self.fingerprint, "episode_outcomes": self.outcomes,
                 "algorithm": self.algorithm.state_dict(), "rng": _get_rng()}
        if self.online_state is not None:
            state["online"] = dict(self.online_state)
        folder = self.run_dir / "checkpoints"
        path = folder / (f"{name}.pt" if name else f"step_{step:08d}.pt")
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)  # a kill while saving leaves the previous checkpoint whole
        latest = folder / "latest.pt"
        temporary = folder / "latest.tmp"
        torch.save(state, temporary)
        temporary.replace(latest)
        return path


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.algo}-{Path(config.dataset).stem}-{stamp}"


def latest_checkpoint(run_dir: Path) -> Path:
    path = run_dir / "checkpoints" / "latest.pt" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise LearnError(f"no checkpoint at {path}: give a run folder (runs/<name>) or a checkpoint file")
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by Trainer.save_checkpoint (tensors and plain data only: no pickled code)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises many types for a truncated or foreign file)
        raise LearnError(f"{path} is not a readable robot_stack checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LearnError(f"{path} is not a robot_stack checkpoint")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise LearnError(f"{path} is checkpoint version {state['version']}; this robot_stack reads up to "
                         f"{CHECKPOINT_VERSION}: upgrade robot_stack")
    return state


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[Algorithm, ObservationSpec, TrainConfig]:
    """The algorithm (actor included), observation spec and config of a checkpoint or run folder, ready to act."""
    state = load_checkpoint(latest_checkpoint(Path(path)), device)
    config = config_from_dict(state["config"])
    spec = ObservationSpec.from_json(state["spec"])
    algorithm = algorithm_class(config.algo)(spec, config, torch.device(device))
    algorithm.load_state_dict(state["algorithm"])
    algorithm.train(False)
    return algorithm, spec, config


def _first_mismatch(saved: dict[str, dict[str, Any]], wanted: dict[str, dict[str, Any]]) -> str | None:
    """The first parameter a checkpoint's modules lack or hold in another shape than this run's, as "module.name
    [shape] vs [shape]"; None when every module fits."""
    for module, parameters in wanted.items():
        for name, value in parameters.items():
            have = saved.get(module, {}).get(name)
            if have is None:
                return f"{module}.{name} is not in it"
            if tuple(have.shape) != tuple(value.shape):
                return f"{module}.{name} is {list(have.shape)} there, {list(value.shape)} here"
    return None


def _get_rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _summary_writer(folder: Path, log: Callable[[str], None]) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard is not installed: no TensorBoard logs (pip install 'robot_stack[learn]')")
        return None
    return SummaryWriter(str(folder))


def _postfix(means: dict[str, float], evaluation: dict[str, Any] | None) -> dict[str, str]:
    shown = {key: f"{value:.3g}" for key, value in means.items() if key.endswith("loss")}
    if evaluation:
        shown["success"] = f"{evaluation['success_rate']:.0%}"
    return shown


def _without_rows(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if evaluation is None else {k: v for k, v in evaluation.items() if k != "rows"}
