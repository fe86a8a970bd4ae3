"""Training configs: one dataclass for the run, one per algorithm; YAML in, checked at load, saved with every run.

The defaults of each algorithm are its paper's (robot_stack/learn/configs/<algo>.yaml says which). A
config file holds TrainConfig fields at the top level and the algorithm's fields under ``algorithm:``;
``--set key=value`` overrides either (``algorithm.expectile=0.9``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_stack.errors import LearnError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class BCConfig:
    """Behaviour cloning: a deterministic actor regressed onto the dataset's actions (MSE)."""

    actor_lr: float = 3e-4


@dataclass
class TD3BCConfig:
    """TD3+BC (Fujimoto & Gu 2021): TD3 with a BC term; Q is scaled by alpha / mean|Q|."""

    alpha: float = 2.5
    policy_noise: float = 0.2  # target policy smoothing noise, in [-1, 1] action units
    noise_clip: float = 0.5
    policy_freq: int = 2  # actor and target updates every policy_freq critic updates
    tau: float = 0.005  # target network soft-update rate
    n_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4


@dataclass
class IQLConfig:
    """IQL (Kostrikov et al. 2021): expectile value regression, Q from V(s'), advantage-weighted actor."""

    expectile: float = 0.7  # tau of the expectile loss
    beta: float = 3.0  # inverse temperature of the advantage weights
    max_weight: float = 100.0  # exp(beta * A) is clipped here
    tau: float = 0.005
    n_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    actor_cosine_decay: bool = True  # the paper decays the actor's learning rate with a cosine schedule
    dropout: float = 0.0  # actor dropout (the paper uses 0.1 on some tasks)


@dataclass
class SACConfig:
    """SAC (Haarnoja et al. 2018): squashed Gaussian actor, automatic entropy temperature, a critic ensemble whose
    target is the min over a random subset of its members (REDQ's, as RLPD uses)."""

    tau: float = 0.005  # target network soft-update rate
    n_critics: int = 2
    critic_subset: int | None = None  # target: min over this many target critics drawn at random each update (None: all)
    layer_norm: bool = False  # LayerNorm after each hidden layer of the critics (RLPD)
    actor_q: str = "min"  # the Q the actor ascends: "min" over the critics (SAC's clipped double Q) or their "mean" (RLPD, WSRL)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4  # entropy temperature (SAC's automatic tuning)
    target_entropy: float | None = None  # None: target_entropy_per_element x the number of Gaussian command elements
    target_entropy_per_element: float = -1.0  # SAC's -dim(A); RLPD's code uses -dim(A)/2
    backup_entropy: bool = True  # subtract alpha * log pi(a'|s') in the TD target (soft Bellman backup)
    actor_every: int = 1  # actor and temperature update once per this many critic updates (0: once per env step, i.e. utd)
    # Command elements (names from the robot's command_spec, or indices) that act as open/close, e.g. [gripper]:
    # the actor is a Bernoulli over their bounds and the critic sees them at a bound (see TanhGaussianActor).
    binary_actions: list[str] = field(default_factory=list)


@dataclass
class CQLConfig(SACConfig):
    """CQL(H) (Kumar et al. 2020) on SAC: logsumexp over sampled actions pushes down out-of-data Q."""

    alpha: float = 5.0  # weight of the conservative penalty (the paper's alpha for continuous control)
    n_actions: int = 10  # sampled actions per state for the logsumexp (random, policy at s, policy at s')
    temperature: float = 1.0
    actor_lr: float = 1e-4
    alpha_lr: float = 1e-4
    backup_entropy: bool = False  # the paper's code does not subtract alpha * log pi in the TD target
    # The authors' options for hard, sparse tasks (AntMaze, robot manipulation); off = the paper's CQL(H).
    bc_steps: int = 0  # actor warm-start: maximise log pi(a_data|s) (+ entropy) for the first bc_steps updates
    max_target_backup: bool = False  # target: max over n_actions policy samples at s' of min_i Q_targ_i
    clip_diff_min: float | None = None  # clip each (logsumexp - Q_data) term from below before the mean
    clip_diff_max: float | None = None  # ... and from above
    lagrange_gap: float | None = None  # CQL-Lagrange: tune alpha' so the penalty stays at this gap (None: fixed alpha)
    alpha_prime_lr: float = 3e-4  # learning rate of log alpha' (CQL-Lagrange)
    # Cal-QL (Nakamoto et al. 2023): the penalty never pushes Q(s, a ~ pi) below the data's return-to-go at s.
    calibrated: bool = False


@dataclass
class CalQLConfig(CQLConfig):
    """Cal-QL (Nakamoto et al. 2023): CQL whose penalty stops at the data's return-to-go; the authors' defaults
    (alpha 5, max target backup), kept on through the online phase."""

    calibrated: bool = True
    max_target_backup: bool = True


@dataclass
class RLPDConfig(SACConfig):
    """RLPD (Ball et al. 2023): SAC with a LayerNorm critic ensemble of 10, a random pair in the target, the actor on
    the ensemble's mean and updated once per environment step (its utd critic updates). No entropy in the backup
    (the authors' code has it): with rewards <= 0 and success terminal, a positive entropy bonus per step makes
    wandering on worth more than reaching the goal (configs/rlpd.yaml has the measurement)."""

    n_critics: int = 10
    critic_subset: int | None = 2
    layer_norm: bool = True
    actor_q: str = "mean"
    target_entropy_per_element: float = -0.5
    backup_entropy: bool = False
    actor_every: int = 0


@dataclass
class WSRLConfig(CalQLConfig):
    """WSRL (Zhou et al. 2024): Cal-QL offline on a LayerNorm ensemble of 10 critics (a random pair in the target,
    the actor on their mean); at the switch the penalty goes to 0, leaving SAC on the same networks. One TD target
    for both phases (no max backup), so the online critic is exactly SAC's."""

    n_critics: int = 10
    critic_subset: int | None = 2
    layer_norm: bool = True
    actor_q: str = "mean"
    max_target_backup: bool = False


@dataclass
class HybridConfig(SACConfig):
    """What H2O and DARC share (robot_stack.learn.algorithms.h2o): SAC without entropy in the backup, and two
    discriminators of real vs sim transitions on the normalized state features."""

    backup_entropy: bool = False  # the H2O authors' code
    discriminator_dims: list[int] = field(default_factory=lambda: [256, 256])
    discriminator_lr: float = 3e-4
    discriminator_noise: float = 0.1  # std of the Gaussian noise on every discriminator input, normalized units


@dataclass
class H2OConfig(HybridConfig):
    """H2O (Niu et al. 2022): sim TD errors weighted by the clipped dynamics ratio P/P^, and a penalty that pushes Q
    down on sim pairs with large dynamics gaps (logsumexp of Q + log omega) and up on real data; the authors'
    defaults."""

    penalty_weight: float = 0.01  # beta
    ratio_min: float = 1e-5  # the clip of the sim TD weight w = P/P^
    ratio_max: float = 1.0
    gap_samples: int = 10  # perturbed next states per sim transition in the estimate of u(s, a)
    gap_noise: float = 1.0  # their std, in normalized units (1 = the data's std of each state component)
    gap_min: float = 1e-8  # the clip of u(s, a) (the authors: 1e-45, i.e. such a pair drops out of the softmax)
    gap_max: float = 10.0


@dataclass
class DARCConfig(HybridConfig):
    """DARC (Eysenbach et al. 2021): sim rewards corrected by log P/P^ from the same discriminators, then SAC."""

    correction_clip: float = 10.0  # |log P/P^| added to a sim reward is clipped here


ALGORITHM_CONFIGS: dict[str, type] = {"bc": BCConfig, "td3bc": TD3BCConfig, "iql": IQLConfig, "cql": CQLConfig,
                                      "sac": SACConfig, "calql": CalQLConfig, "rlpd": RLPDConfig, "wsrl": WSRLConfig,
                                      "h2o": H2OConfig, "darc": DARCConfig}
HYBRID_ALGOS = ("h2o", "darc")
"""Algorithms that learn from a real dataset and a sim env at once (--sim): they evaluate in the dataset's dynamics."""


@dataclass
class TrainConfig:
    """One training run: what data, what observations, how long, how evaluated, and the algorithm's config."""

    algo: str = "iql"
    dataset: str = ""
    reward: str = "sim"  # "sim" (recorded sim ground truth), "success", "labels/<run>", or "none" (BC)
    # Added to every frame's reward. "auto": a label run is shifted so its best frame earns 0 (rewards <= 0; see
    # replay.reward_offset), other sources are used as they are. A number: that offset, whatever the source.
    reward_offset: Any = "auto"
    observations: list[str] = field(default_factory=list)  # state features; empty = every feature of kind 'state'
    images: list[str] = field(default_factory=list)  # image features (image.<camera>) seen by the policy
    image_encoder: str = "cnn"  # "cnn" (trained, random-shift augmentation) or "clip:<model>" (frozen, cached)
    steps: int = 100_000  # gradient updates
    batch_size: int = 256
    gamma: float = 0.99
    n_step: int = 1
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1"
    compile: str = "auto"  # torch.compile the update: "auto" (on CUDA), "on", "off"
    cuda_graphs: str = "auto"  # capture sampling + update in a CUDA graph: "auto" (on CUDA), "on", "off"
    bf16: bool = False  # bf16 autocast in the forward passes (CUDA)
    log_every: int = 1000  # steps between metric reads (the only host syncs of the loop)
    eval_every: int = 10_000  # steps between sim evaluations; 0 = only at the end; -1 = never
    eval_episodes: int = 10
    eval_seed: int = 1_000_000  # evaluation episode i uses seed eval_seed + i (away from data seeds)
    eval_env: str = "auto"  # the sim task to evaluate in: "auto" (the dataset robot's sim_task), "none", or a task name
    checkpoint_every: int = 10_000
    out: str = ""  # run folder; empty = runs/<algo>-<dataset>-<time>
    # Online fine-tuning (offline-to-online): after the `steps` offline updates (the offline phase; 0 = none),
    # the run switches to interacting with `online` for `online_steps` environment steps.
    online: str = ""  # "" (offline only), "sim:TASK[:PRESET]" (a gymnasium env of sim/), or "robot" (the ROS 2 loop)
    online_steps: int = 20_000  # environment steps of the online phase
    utd: int = 1  # gradient updates per environment step in the online phase (update-to-data ratio)
    # Share of each online-phase batch drawn from online transitions: a number in [0, 1] (RLPD's symmetric
    # sampling is 0.5; 1 drops the offline data, as WSRL does), or "proportional": uniform over offline + online.
    online_ratio: Any = "proportional"
    warmup_steps: int = 0  # environment steps of the frozen pre-trained policy, no updates, opening the online phase (WSRL's K)
    online_eval_every: int = 2_000  # environment steps between sim evaluations in the online phase (0: at the end only)
    num_envs: int = 1  # sim target: envs stepped side by side (a gymnasium vector env when > 1)
    push_every: int = 1_000  # robot target: gradient updates between models exported and sent on /policy/load
    online_dataset: str = ""  # where online episodes are written (sim) or land (robot); "" = <run>/online.zarr (sim)
    init_from: str = ""  # a run folder or checkpoint whose networks (and optimizers) this run starts from
    # The sim dynamics evaluations run in: "auto" (an online run's sim target preset; otherwise, and for hybrid
    # sim-real runs, "dataset"), "dataset" (the preset the dataset was collected in, from its provenance; nominal
    # for data from a real robot), or a preset of sim/dynamics.py.
    eval_dynamics: str = "auto"
    algorithm: Any = None  # the algorithm's dataclass (filled from ALGORITHM_CONFIGS[algo])

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHM_CONFIGS:
            raise LearnError(f"unknown algorithm {self.algo!r}; use one of {', '.join(ALGORITHM_CONFIGS)}")
        cls = ALGORITHM_CONFIGS[self.algo]
        if self.algorithm is None:
            self.algorithm = cls()
        elif isinstance(self.algorithm, dict):
            self.algorithm = _build(cls, self.algorithm, f"algorithm ({self.algo})")
        self.check()

    def check(self) -> None:
        """Raise LearnError naming the first value that cannot be used."""
        if self.algo in HYBRID_ALGOS and not self.online.startswith("sim:"):
            raise LearnError(f"config: {self.algo} learns from the dataset (real) and a sim env at once: give "
                             "--sim TASK[:PRESET], e.g. --sim reach2d:sim")
        if int(self.steps) == 0 and not self.online:  # rlpd's default: an online run with no offline phase
            raise LearnError("config: steps 0 (no offline phase) is for online runs: give --online sim:TASK or robot, "
                             "or --steps N to train offline")
        if int(self.steps) < (0 if self.online else 1):  # an online run may skip the offline phase (RLPD's default)
            raise LearnError(f"config: steps must be at least {0 if self.online else 1}, got {self.steps}")
        positive = ("batch_size", "n_step", "log_every", "eval_episodes", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise LearnError(f"config: {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0:
            raise LearnError(f"config: gamma must be in (0, 1], got {self.gamma}")
        for name in ("compile", "cuda_graphs"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise LearnError(f"config: {name} must be auto, on or off, got {getattr(self, name)!r}")
        if not (self.reward in ("sim", "success", "none") or self.reward.startswith(("labels/", "feature:"))):
            raise LearnError(f"config: reward {self.reward!r}: use sim, success, labels/<run>, feature:<name> or none")
        if isinstance(self.reward_offset, str) and self.reward_offset != "auto":
            try:  # --set reward_offset=-1 and YAML strings
                self.reward_offset = float(self.reward_offset)
            except ValueError:
                pass
        if self.reward_offset != "auto" and not (isinstance(self.reward_offset, (int, float))
                                                 and not isinstance(self.reward_offset, bool)
                                                 and math.isfinite(self.reward_offset)):
            raise LearnError(f"config: reward_offset must be auto or a number, got {self.reward_offset!r}")
        if isinstance(self.online_ratio, str) and self.online_ratio != "proportional":
            try:  # --set online_ratio=0.5 and YAML strings
                self.online_ratio = float(self.online_ratio)
            except ValueError:
                pass
        if self.online_ratio != "proportional" and not (
                isinstance(self.online_ratio, (int, float)) and not isinstance(self.online_ratio, bool)
                and 0.0 <= self.online_ratio <= 1.0):
            raise LearnError(f"config: online_ratio must be a number in [0, 1] or proportional, got {self.online_ratio!r}")
        if self.online and not (self.online == "robot" or (self.online.startswith("sim:") and len(self.online) > 4)):
            raise LearnError(f"config: online {self.online!r}: use sim:TASK[:PRESET] (e.g. sim:reach2d) or robot")
        for name in ("online_steps", "utd", "num_envs", "push_every"):
            if int(getattr(self, name)) < 1:
                raise LearnError(f"config: {name} must be at least 1, got {getattr(self, name)}")
        if int(self.warmup_steps) < 0 or int(self.online_eval_every) < 0:
            raise LearnError("config: warmup_steps and online_eval_every must be >= 0")
        if self.reward == "none" and self.algo != "bc":
            raise LearnError(f"config: {self.algo} needs a reward (reward: none is for bc only)")
        if not (self.image_encoder == "cnn" or self.image_encoder.startswith("clip:")):
            raise LearnError(f"config: image_encoder {self.image_encoder!r}: use cnn or clip:<model>")
        if not self.hidden_dims or any(int(d) < 1 for d in self.hidden_dims):
            raise LearnError(f"config: hidden_dims must be positive layer widths, got {self.hidden_dims}")
        algo = self.algorithm
        if isinstance(algo, IQLConfig) and not 0.0 < algo.expectile < 1.0:
            raise LearnError(f"config: algorithm.expectile must be in (0, 1), got {algo.expectile}")
        if hasattr(algo, "n_critics") and algo.n_critics < 1:
            raise LearnError(f"config: algorithm.n_critics must be at least 1, got {algo.n_critics}")
        if hasattr(algo, "tau") and not 0.0 < algo.tau <= 1.0:
            raise LearnError(f"config: algorithm.tau must be in (0, 1], got {algo.tau}")
        if isinstance(algo, SACConfig):
            if algo.critic_subset is not None and not 1 <= algo.critic_subset <= algo.n_critics:
                raise LearnError(f"config: algorithm.critic_subset must be between 1 and n_critics ({algo.n_critics}), "
                                 f"got {algo.critic_subset}")
            if algo.actor_q not in ("min", "mean"):
                raise LearnError(f"config: algorithm.actor_q must be min or mean, got {algo.actor_q!r}")
            if algo.actor_every < 0:
                raise LearnError(f"config: algorithm.actor_every must be >= 0 (0: once per environment step), "
                                 f"got {algo.actor_every}")
        if self.algo in HYBRID_ALGOS:
            if int(self.steps) != 0:
                raise LearnError(f"config: {self.algo} has no offline phase (its discriminators need sim data): "
                                 f"steps 0, not {self.steps}")
            if self.online_ratio != "proportional" and not 0.0 < float(self.online_ratio) < 1.0:
                raise LearnError(f"config: {self.algo} needs real and sim rows in each batch: online_ratio (the sim "
                                 f"share) in (0, 1) or proportional, not {self.online_ratio}")
            if int(self.warmup_steps) < 1:
                raise LearnError(f"config: {self.algo} needs sim data before its first update: warmup_steps >= 1")
            if algo.discriminator_noise < 0 or not algo.discriminator_dims:
                raise LearnError("config: algorithm.discriminator_noise must be >= 0 and discriminator_dims non-empty")
        if isinstance(algo, H2OConfig):
            if not 0.0 < algo.ratio_min <= algo.ratio_max:
                raise LearnError(f"config: algorithm.ratio_min/ratio_max must satisfy 0 < min <= max, got "
                                 f"{algo.ratio_min}, {algo.ratio_max}")
            if not 0.0 < algo.gap_min <= algo.gap_max:
                raise LearnError(f"config: algorithm.gap_min/gap_max must satisfy 0 < min <= max, got "
                                 f"{algo.gap_min}, {algo.gap_max}")
            if algo.gap_samples < 1 or algo.gap_noise < 0 or algo.penalty_weight < 0:
                raise LearnError("config: algorithm.gap_samples must be >= 1, gap_noise and penalty_weight >= 0")
        if not self.eval_dynamics:
            raise LearnError("config: eval_dynamics must be auto, dataset or a dynamics preset")
        if type(algo) is CalQLConfig and not algo.calibrated:
            raise LearnError("config: calql is CQL with calibrated: true; train --algo cql for the uncalibrated penalty")
        if isinstance(algo, CQLConfig):
            low, high = algo.clip_diff_min, algo.clip_diff_max
            if low is not None and high is not None and low > high:
                raise LearnError(f"config: algorithm.clip_diff_min ({low}) is above clip_diff_max ({high})")
            if algo.bc_steps < 0:
                raise LearnError(f"config: algorithm.bc_steps must be >= 0, got {algo.bc_steps}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["algorithm"] = dataclasses.asdict(self.algorithm)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise LearnError(f"config {where}: unknown key(s) {unknown}; known: {sorted(names)}")
    defaults = cls()
    checked = {key: _coerce(value, None if key == "algorithm" else getattr(defaults, key), f"{where}.{key}",
                            optional_type=_optional_type(names[key]))
               for key, value in values.items()}
    return cls(**checked)


_OPTIONAL_TYPES = {"float": 0.0, "int": 0, "str": "", "bool": False}


def _optional_type(field: dataclasses.Field) -> Any:
    """For a field annotated `X | None`: an example value of X (what a value for it is converted to), else None."""
    parts = [part.strip() for part in str(field.type).split("|")]
    if "None" not in parts:
        return None
    kinds = [part for part in parts if part != "None"]
    return _OPTIONAL_TYPES.get(kinds[0]) if len(kinds) == 1 else None


def _coerce(value: Any, default: Any, where: str, optional_type: Any = None) -> Any:
    """value converted to the type of the field's default (YAML gives 3 for 3.0, strings from --set).

    Fields that may be None (`float | None`) take "none"/"null" for None and otherwise convert to their type.
    """
    if optional_type is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            return None
        default = optional_type
    if default is None or value is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes", "on")
            return bool(value)
        if isinstance(default, (int, float)):
            number = type(default)(float(value)) if isinstance(default, int) else float(value)
            if isinstance(default, int) and float(value) != number:
                raise ValueError(value)
            return number
        if isinstance(default, list):
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.startswith("[") else [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError(value)  # noqa: TRY004  (turned into a LearnError below)
            return [type(default[0])(v) if default else v for v in value]
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise LearnError(f"config {where}: {value!r} is not a {type(default).__name__}") from None
    return value


def default_config_path(algo: str) -> Path:
    return CONFIG_DIR / f"{algo}.yaml"


def load_config(algo: str | None = None, path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                **fields: Any) -> TrainConfig:
    """The run config: the algorithm's YAML in the repo, then `path` (a user's YAML), then fields, then overrides.

    overrides: {"steps": "5000", "algorithm.expectile": "0.9"} (strings from the CLI's --set are converted).
    """
    document: dict[str, Any] = {}
    if path is not None:
        document = _read_yaml(Path(path))
    algo = algo or fields.get("algo") or document.get("algo")
    if algo not in ALGORITHM_CONFIGS:
        raise LearnError(f"unknown algorithm {algo!r}; use one of {', '.join(ALGORITHM_CONFIGS)}")
    merged = _read_yaml(default_config_path(algo))
    if document.get("algo", algo) != algo:
        raise LearnError(f"{path} is a config for {document['algo']}, not {algo}")
    for source in (document, {k: v for k, v in fields.items() if v is not None}):
        algorithm = {**merged.get("algorithm", {}), **(source.get("algorithm") or {})}
        merged.update({k: v for k, v in source.items() if k != "algorithm"})
        merged["algorithm"] = algorithm
    for key, value in (overrides or {}).items():
        head, _, tail = key.partition(".")
        if head == "algorithm" and tail:
            merged["algorithm"][tail] = value
        elif tail:
            raise LearnError(f"config override {key!r}: only algorithm.<name> has sub-keys")
        else:
            merged[key] = value
    merged["algo"] = algo
    algorithm = merged.pop("algorithm", {}) or {}
    config = _build(TrainConfig, {k: v for k, v in merged.items()}, "")
    config.algorithm = _build(ALGORITHM_CONFIGS[algo], algorithm, f"algorithm ({algo})")
    config.check()
    return config


RESUME_SETTINGS = ("steps", "device", "eval_every", "eval_episodes", "online_steps", "online_eval_every")
"""TrainConfig fields a resumed run takes new values of: how long, where and how it is evaluated. The other
fields say what it learns (its checkpoint's networks, optimizer state and data depend on them) and stay."""


def resumed_config(saved: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """A run's saved config with new values of RESUME_SETTINGS fields, checked; LearnError for any other field."""
    refused = sorted(set(changes) - set(RESUME_SETTINGS))
    if refused:
        raise LearnError(f"a resumed run keeps its saved {', '.join(refused)}; only {', '.join(RESUME_SETTINGS)} "
                         "can change (train a new run to change the rest)")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    typed = {key: _coerce(value, fields[key].default, key) for key, value in changes.items()}
    return dataclasses.replace(saved, **typed)  # __post_init__ checks the new values


def derived_config(base: TrainConfig, fields: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """`base` (a saved run's config) with `fields` (None: keep base's) and `overrides` ({"utd": "4",
    "algorithm.tau": "0.01"}, as load_config takes them) applied, checked: the config of a run that starts from
    base's run (--init-from)."""
    data = base.to_dict()
    algorithm = data.pop("algorithm")
    data.update({key: value for key, value in fields.items() if value is not None})
    for key, value in (overrides or {}).items():
        head, _, tail = key.partition(".")
        if head == "algorithm" and tail:
            algorithm[tail] = value
        elif tail:
            raise LearnError(f"config override {key!r}: only algorithm.<name> has sub-keys")
        else:
            data[key] = value
    config = _build(TrainConfig, data, "")
    config.algorithm = _build(ALGORITHM_CONFIGS[config.algo], algorithm, f"algorithm ({config.algo})")
    config.check()
    return config


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from to_dict() output (a saved run)."""
    data = dict(data)
    algorithm = data.pop("algorithm", {}) or {}
    config = _build(TrainConfig, data, "")
    config.algorithm = _build(ALGORITHM_CONFIGS[config.algo], algorithm, f"algorithm ({config.algo})")
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LearnError(f"config file {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise LearnError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise LearnError(f"config file {path}: expected a mapping of config keys")
    return document
