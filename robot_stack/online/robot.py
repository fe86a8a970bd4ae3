"""``robot-stack train --online robot``: the learner of the actor/learner split over ROS 2 (docs/online.md).

The actor runs on the robot's computer: the policy node (the model, its safety filter, the operator's
/teleop/command override) and, wherever the dataset lives, the recorder (launch/online.launch.yaml). This learner,
on the workstation, runs the episodes (reset, `start`, then `success`/`fail`/`stop` on /recorder/control at the
sim's success or the horizon), reads each episode the recorder commits from the dataset as it lands (the dataset
is the replay's durable half: nothing collected is lost when a process dies), adds it to the run's online replay
(robot_stack.learn.online.OnlineRun), trains `utd` updates per landed environment step, and every `push_every`
updates saves a checkpoint, exports it to ONNX and sends the bytes on /policy/load, confirmed by /policy/status.

Resume: the checkpoint records how many of the dataset's episodes the replay holds (OnlineRun.episodes_added,
counted from the dataset's first episode of this run, kept in <run>/robot.json); a restarted learner rebuilds the
replay from those and takes every later committed episode as new, so none is lost or used twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import DatasetError, LearnError
from robot_stack.online.actor import ActorLink, EpisodeDriver, ModelPusher
from robot_stack.online.options import RobotOptions

ROBOT_FILE = "robot.json"
"""<run>/robot.json: the online dataset and the index of its first episode recorded by this run."""
UPDATE_CHUNK = 8  # most gradient updates between two looks at the ROS topics
UPDATE_BUDGET = 0.5  # of a control period: how long the updates between two looks may take
DATASET_POLL_S = (0.2, 2.0)  # how often the dataset is read: while an episode is due to land, otherwise
PUSH_TIMEOUT_S = 120.0  # the policy node parses, checks and warms a model up before it answers


def online_dataset_path(run: Any) -> Path:
    """Where the recorder's episodes land: config.online_dataset, by default <run>/online.zarr."""
    return Path(run.config.online_dataset) if run.config.online_dataset else Path(run.run_dir) / "online.zarr"


def train_on_robot(config: Any, options: RobotOptions | None = None, *, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The robot learner for a TrainConfig with online: robot: a new run in config.out, or the run already there
    resumed (a killed learner restarted with the same command carries on). Returns run_robot_learner's result."""
    from robot_stack.label.apply import label_reward_model
    from robot_stack.learn.config import RESUME_SETTINGS, config_from_dict
    from robot_stack.learn.online import OnlineRun
    from robot_stack.learn.trainer import Trainer, load_checkpoint

    log = log or _print
    out = Path(config.out) if config.out else None
    latest = out / "checkpoints" / "latest.pt" if out is not None else None
    if latest is not None and latest.is_file():
        saved = config_from_dict(load_checkpoint(latest, "cpu")["config"]).to_dict()
        given = config.to_dict()
        changed = sorted(key for key in given if key not in RESUME_SETTINGS and key != "out" and given[key] != saved.get(key))
        if changed:
            raise LearnError(f"{out} holds a run with other settings ({', '.join(changed)} differ): restart it with the "
                             "command that began it, or give another --out")
        log(f"resuming the robot learner's run {out}")
        trainer = Trainer(resume=out, changes={key: given[key] for key in RESUME_SETTINGS}, progress=progress, log=log)
    else:
        trainer = Trainer(config, progress=progress, log=log)
    return run_robot_learner(OnlineRun(trainer, label_reward_model), options, progress=progress, log=log)


def run_robot_learner(run: Any, options: RobotOptions | None = None, *, progress: bool = True,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Offline phase (if any), switch, then the online phase on the robot until config.online_steps environment
    steps have landed; run.finish()'s result with "robot": the learner's counts and "complete". A pushed model the
    policy node refused or never answered for is a LearnError at the end (the run is finished and saved first)."""
    from robot_stack import ros

    options = options or RobotOptions()
    log = log or _print
    path = online_dataset_path(run)
    horizon = options.horizon or _sim_horizon(run, options)
    checked = path.exists()
    check_online_dataset(path, run)  # before the offline phase: a wrong dataset fails at once
    run.pretrain()
    run.switch()
    run.save_checkpoint()  # from here on the same command resumes the run, even one with no offline phase
    first = _first_episode(Path(run.run_dir), path, log)
    ros.init([])
    link = ActorLink(ros, options, f"online_learner_{os.getpid()}")
    started = time.perf_counter()
    try:
        link.wait_for_actor()
        recorded_to = (link.recorder_status or {}).get("dataset")
        if recorded_to and Path(recorded_to).resolve() != path.resolve():
            log(f"the recorder writes {recorded_to}, this learner reads {path}: fine if one is synced to the other, "
                "else give the learner the recorder's dataset (--online-dataset PATH)")
        learner = RobotLearner(run, link, options, path, first, horizon, log, progress, checked)
        summary = learner.learn()
    finally:
        link.close()
        ros.shutdown()
    result = run.finish(time.perf_counter() - started)
    complete = summary["env_steps"] >= run.config.online_steps and summary["pushed"] == summary["accepted"]
    result = dict(result or {}) | {"robot": summary, "complete": complete}
    log(summary_line(summary, path, complete))
    (Path(run.run_dir) / "robot_result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not complete:
        raise LearnError(f"the robot ran the learner's models only in part: of {summary['pushed']} models sent, "
                         f"{summary['refused']} were refused and {summary['unanswered']} not answered (the policy "
                         f"node's log says why); {Path(run.run_dir) / 'robot_result.json'} has the counts")
    return result


def summary_line(summary: dict[str, Any], path: Path, complete: bool) -> str:
    line = (f"robot learner: {summary['committed']} episodes committed to {path} ({summary['interventions']} frames "
            f"under the operator), {summary['env_steps']} env steps, {summary['updates']} online updates; models "
            f"pushed {summary['pushed']}, accepted {summary['accepted']}, refused {summary['refused']}, unanswered "
            f"{summary['unanswered']}")
    if not complete:
        line += (f"; did less than asked ({summary['env_steps']} of {summary['online_steps']} env steps, "
                 f"{summary['pushed'] - summary['accepted']} models not taken)")
    return line


def _print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _sim_horizon(run: Any, options: RobotOptions) -> int:
    """The sim task's horizon [control steps] of the run's dataset robot (--reset sim)."""
    from robot_stack.data import Dataset
    from robot_stack.learn.evaluate import make_env, sim_task_of

    robot = Dataset.open(run.config.dataset).robot
    task = sim_task_of(robot)
    if task is None:
        raise LearnError(f"--reset {options.reset}: the run's dataset is from the real robot {robot.get('name')}, "
                         "there is no sim to reset; use --reset operator or joints with --horizon N")
    env = make_env(task, run.spec)
    try:
        return int(env.unwrapped.task.config.horizon)
    finally:
        env.close()


def check_online_dataset(path: Path, run: Any) -> None:
    """DatasetError when the online dataset at `path` (if it exists yet) is of another robot than the run's dataset,
    or lacks a feature the policy reads."""
    from robot_stack.data import Dataset

    if not path.exists():
        return
    online, offline = Dataset.open(path), Dataset.open(run.config.dataset)
    if any(online.robot.get(key) != offline.robot.get(key) for key in ("name", "command", "command_spec")):
        raise DatasetError(f"{path} was recorded on the robot {online.robot.get('name')!r} "
                           f"({online.robot.get('command')}), the run's dataset {run.config.dataset} on "
                           f"{offline.robot.get('name')!r} ({offline.robot.get('command')}): record this robot's online "
                           "episodes into a new dataset (the launch's dataset:= and --online-dataset)")
    spec = run.spec
    missing = [name for name in [*spec.state, *spec.images, spec.action] if name not in online.features]
    if missing:
        raise DatasetError(f"{path} has no {', '.join(missing)}, which the policy reads: record it with the features "
                           "file the run's dataset was recorded with")


def _first_episode(run_dir: Path, path: Path, log: Callable[[str], None]) -> int:
    """The index of the dataset's first episode recorded for this run: its episode count when the run first met
    it (episodes already there belong to someone else), kept in <run>/robot.json for a restarted learner."""
    from robot_stack.data import Dataset

    record = run_dir / ROBOT_FILE
    if record.is_file():
        saved = json.loads(record.read_text())
        if Path(saved["dataset"]).resolve() != path.resolve():
            raise LearnError(f"run {run_dir} learned from the episodes of {saved['dataset']}, not {path}: resume it with "
                             f"--online-dataset {saved['dataset']}")
        return int(saved["first_episode"])
    first = Dataset.open(path).n_episodes if path.exists() else 0
    if first:
        log(f"{path} already holds {first} episodes recorded before this run: they are not used")
    temporary = record.with_suffix(".tmp")
    temporary.write_text(json.dumps({"dataset": str(path.resolve()), "first_episode": first}) + "\n")
    temporary.replace(record)
    return first


class RobotLearner:
    """The online phase's loop: episodes, landing, updates and pushes, interleaved on one thread."""

    def __init__(self, run: Any, link: ActorLink, options: RobotOptions, path: Path, first: int, horizon: int,
                 log: Callable[[str], None], progress: bool, checked: bool = False) -> None:
        self.run, self.link, self.options, self.path = run, link, options, path
        self.first, self.horizon, self.log, self.progress = first, horizon, log, progress
        self.config = run.config
        self.driver = EpisodeDriver(link, horizon, log)
        self.pusher = ModelPusher(link, log, PUSH_TIMEOUT_S)
        self.pushed_at = run.step
        self.awaiting: int | None = None  # the dataset's episode count once the episode just committed has landed
        self.awaiting_since = 0.0
        self.next_read = 0.0
        self.interventions = 0
        self.checked_dataset = checked  # the dataset was there and checked before the loop
        self.warned_no_flags = False
        self.online_start = int(self.config.steps)  # updates of the offline phase
        self.update_s = 0.01  # a gradient update's duration [s], a running mean

    @property
    def consumed(self) -> int:
        """Dataset episodes the replay holds (this run's, from the first one)."""
        return int(self.run.episodes_added)

    def learn(self) -> dict[str, Any]:
        run, config = self.run, self.config
        self._reload()
        self.driver.recover_orphan()
        every = int(config.online_eval_every)
        next_eval = (run.env_steps // every + 1) * every if every else None
        if run.step > 0:  # the run's own policy replaces whatever model the actor was launched with
            self._push()
        try:
            while True:
                self.link.spin(0.0 if self._pending_updates() and not self.driver.urgent else 0.01)
                self._land()
                if next_eval is not None and run.env_steps >= next_eval and not self.driver.busy:
                    run.evaluate()  # in the sim task's gymnasium env (a sim robot): the curve's points
                    next_eval = (run.env_steps // every + 1) * every
                outcome = self.driver.poll()
                if outcome is not None:
                    self.awaiting = int((self.link.recorder_status or {}).get("episode") or 0)
                    self.awaiting_since = time.monotonic()
                    self.next_read = 0.0
                self._train()
                self.pusher.poll()
                collecting = run.env_steps < config.online_steps
                # Between episodes (an export takes seconds; an episode runs one model), once the last one landed and
                # while episodes remain to be run with it; the last model goes at the end.
                if (collecting and run.step - self.pushed_at >= config.push_every and not self.pusher.busy
                        and not self.driver.busy and self.awaiting is None):
                    self._push()
                if collecting and not self.driver.busy and self.awaiting is None and not self.pusher.busy:
                    self.driver.begin()
                if not collecting and not self.driver.busy and self.awaiting is None and not self._pending_updates():
                    break
            if run.step > self.pushed_at:
                self._push()  # the final model
            self.link.spin_until(lambda: self.pusher.poll() is not None or not self.pusher.busy, PUSH_TIMEOUT_S + 1,
                                 lambda: "no answer from the policy node")
            run.save_checkpoint()
        except KeyboardInterrupt:
            if self.driver.busy:
                self.link.control("stop")  # the recorder commits what was recorded; a restarted learner takes it
            path = run.save_checkpoint()
            self.log(f"stopped: checkpoint {path}; the same command carries on")
            raise
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {"committed": self.consumed, "first_episode": self.first, "env_steps": int(self.run.env_steps),
                "online_steps": int(self.config.online_steps),
                "updates": max(0, int(self.run.step) - self.online_start), "interventions": self.interventions,
                **self.pusher.counts}

    # ---- steps of the loop

    def _reload(self) -> None:
        """A resumed run: the episodes its checkpoint had consumed, back into the replay from the dataset."""
        from robot_stack.data import Dataset

        count = int(self.run.checkpoint_episodes)
        if not count:
            return
        dataset = Dataset.open(self.path) if self.path.exists() else None
        if dataset is None or dataset.n_episodes < self.first + count:
            raise DatasetError(f"run {self.run.run_dir} had learned from {count} episodes of {self.path}, which now "
                               f"holds {0 if dataset is None else dataset.n_episodes - self.first}: the dataset was "
                               "replaced or cut; resume with the dataset it recorded")
        for episode in self.run.episodes_from_dataset(dataset, self.first)[:count]:
            self.run.add_episode(episode, log=False)
            self.interventions += 0 if episode.intervention is None else int(np.count_nonzero(episode.intervention))
        self.log(f"resumed: {count} episodes of {self.path} back in the replay ({self.run.env_steps} env steps, "
                 f"{self.run.step} updates)")

    def _pending_updates(self) -> int:
        """utd updates per landed environment step after the warm-up, minus those done."""
        online = max(0, int(self.run.env_steps) - int(self.config.warmup_steps))
        return max(0, self.online_start + int(self.config.utd) * online - int(self.run.step))

    def _train(self) -> None:
        """A few updates, sized to take about half a control period; none while the driver resets or ends an
        episode (a late `start` would record the robot already moving off its reset state)."""
        pending = self._pending_updates()
        if not pending or self.driver.urgent or self.driver.remaining_s() < 2 * self.update_s:
            return
        budget = UPDATE_BUDGET / self.link.rate_hz()
        chunk = int(min(max(budget / self.update_s, 1), UPDATE_CHUNK))
        count = min(pending, chunk)
        before, started = self.run.step, time.perf_counter()
        self.run.update(count)
        if self.run.step > before:
            self.update_s = 0.8 * self.update_s + 0.2 * (time.perf_counter() - started) / (self.run.step - before)

    def _land(self) -> None:
        """Add the episodes committed since the last look to the replay."""
        from robot_stack.data import Dataset

        now = time.monotonic()
        if now < self.next_read:
            return
        self.next_read = now + DATASET_POLL_S[0 if self.awaiting is not None else 1]
        if self.awaiting is not None and now - self.awaiting_since > self.options.actor_timeout_s:
            raise DatasetError(f"the recorder committed an episode to {(self.link.recorder_status or {}).get('dataset')} "
                               f"but {self.path} did not gain it within {self.options.actor_timeout_s:g} s: give the "
                               "learner the recorder's dataset (--online-dataset PATH)")
        if not self.path.exists():
            return
        dataset = Dataset.open(self.path)
        if self.awaiting is not None and dataset.n_episodes >= self.awaiting:
            self.awaiting = None
        start = self.first + self.consumed
        if dataset.n_episodes <= start:
            return
        if not self.checked_dataset:  # the recorder created it after the learner started
            check_online_dataset(self.path, self.run)
            self.checked_dataset = True
        for index, episode in enumerate(self.run.episodes_from_dataset(dataset, start), start):
            self.run.add_episode(episode)
            flags = 0 if episode.intervention is None else int(np.count_nonzero(episode.intervention))
            self.interventions += flags
            if episode.intervention is None and not self.warned_no_flags:
                self.warned_no_flags = True
                self.log(f"{self.path} has no intervention flags: launch the recorder with record_intervention:=true "
                         "to keep the operator's corrections apart")
            if self.progress:
                self.log(f"episode {index}: {episode.frames} frames, {'success' if episode.success else 'no success'}, "
                         f"{flags} under the operator; {self.run.env_steps}/{self.config.online_steps} env steps, "
                         f"{self.run.step - self.online_start} online updates")

    def _push(self) -> None:
        """Checkpoint, export it (parity-checked ONNX + card) and send it to the policy node."""
        from robot_stack.deploy.card import sha256_bytes
        from robot_stack.deploy.export import export_run

        checkpoint = self.run.save_checkpoint()
        out = Path(self.run.run_dir) / "models" / f"online_{int(self.run.step):08d}.onnx"
        export_run(self.run.run_dir, out, checkpoint=checkpoint)
        model_bytes = out.read_bytes()
        self.pushed_at = int(self.run.step)
        if self.pusher.busy:  # the answer for the one before is still due: wait for it (the node takes one at a time)
            self.link.spin_until(lambda: self.pusher.poll() is not None or not self.pusher.busy, PUSH_TIMEOUT_S + 1,
                                 lambda: "no answer from the policy node")
        self.pusher.push(model_bytes, sha256_bytes(model_bytes), out.stem)
        if self.progress:
            self.log(f"pushed model {out.stem} ({len(model_bytes)} bytes) on /policy/load after "
                     f"{self.run.step - self.online_start} online updates")
