"""The robot target of online fine-tuning over real DDS on loopback: launch/online.launch.yaml (the MuJoCo sim robot,
the policy node, the recorder) and the learner (`robot-stack train --online robot`) as processes, this test standing
in for the operator (/teleop/command) and watching /policy/status and /recorder/status. The learner is killed
(SIGKILL) at a random moment once its checkpoint holds an episode, and restarted with the same command."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fresh_dds_env, stop_process

from robot_stack.data import Dataset, DatasetWriter
from robot_stack.deploy.card import sha256_file
from robot_stack.errors import RosError

ONLINE_STEPS = 150  # reach2d episodes are at most 30 steps: five or more episodes
TELEOP_COMMAND = [0.4, -0.4]  # inside reach2d's command bounds; the model rarely commands exactly this


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A small reach2d dataset and a model exported from a short BC run on it (the actor's first model)."""
    from robot_stack.sim.collect import main as sim_collect

    from robot_stack.cli.main import main as cli
    from robot_stack.deploy.export import export_run

    root = tmp_path_factory.mktemp("offline")
    dataset = root / "reach2d.zarr"
    assert sim_collect(["--task", "reach2d", "--episodes", "20", "--mix", "expert=0.5,medium=0.5", "-o", str(dataset),
                        "-q"]) in (0, None)
    assert cli(["train", "--algo", "bc", "--dataset", str(dataset), "--eval-every", "-1", "--out", str(root / "bc"),
                "--no-progress", "--steps", "50", "--batch-size", "64", "--set", "hidden_dims=[64,64]"]) == 0
    export_run(root / "bc", root / "initial.onnx")
    return {"dataset": dataset, "model": root / "initial.onnx"}


class Operator:
    """The test's node: /teleop/command out (as a remapped teleop); /policy/status and /recorder/status in."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = ros.create_node("test_operator")
        self.teleop = self.node.create_publisher("std_msgs/msg/Float64MultiArray", "/teleop/command", ros.qos.DEFAULT)
        self.policy: dict = {}
        self.recorder: dict = {}
        self.node.create_subscription("std_msgs/msg/String", "/policy/status",
                                      lambda m: self.policy.update(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)
        self.node.create_subscription("std_msgs/msg/String", "/recorder/status",
                                      lambda m: self.recorder.update(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)

    def spin_until(self, done, what: str, processes: dict[str, subprocess.Popen], timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited ({process.returncode}) while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.ros.spin_once(self.node, 0.02)

    def take_over(self, ticks: int, processes: dict[str, subprocess.Popen]) -> None:
        """Send the operator's command at 20 Hz for `ticks` control periods."""
        from robot_stack.ros import convert

        for _ in range(ticks):
            self.teleop.publish(convert.float_array(TELEOP_COMMAND))
            until = time.monotonic() + 0.05
            self.spin_until(lambda until=until: time.monotonic() >= until, "a control period", processes)


def _consumed_episodes(run_dir: Path) -> int:
    """Online episodes in the run's latest checkpoint (0 before there is one)."""
    from robot_stack.errors import LearnError
    from robot_stack.learn.trainer import load_checkpoint

    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return 0
    try:
        return int((load_checkpoint(latest).get("online") or {}).get("episodes", 0))
    except LearnError:  # replaced while it was read
        return 0


def test_robot_loop_over_dds_pushes_models_records_interventions_and_resumes_after_a_kill(offline, tmp_path,
                                                                                          monkeypatch):
    env = fresh_dds_env()
    for key in ("ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG", "ROBOT_STACK_ROS_BACKEND", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    dataset, run_dir = tmp_path / "online.zarr", tmp_path / "run"
    launch_log = (tmp_path / "launch.log").open("w")
    launch = subprocess.Popen([sys.executable, "-m", "robot_stack.cli.main", "launch",
                               str(REPO / "launch" / "online.launch.yaml"), f"model:={offline['model']}",
                               "task:=reach2d", f"dataset:={dataset}"],
                              cwd=tmp_path, env=env, stdout=launch_log, stderr=subprocess.STDOUT)
    learner_command = [sys.executable, "-m", "robot_stack.cli.main", "train", "--algo", "iql",
                       "--dataset", str(offline["dataset"]), "--steps", "20", "--batch-size", "64",
                       "--set", "hidden_dims=[64,64]", "--eval-every", "-1", "--online", "robot",
                       "--online-steps", str(ONLINE_STEPS), "--utd", "1", "--set", "push_every=20",
                       "--online-dataset", str(dataset), "--out", str(run_dir)]
    logs = [tmp_path / "learner1.log", tmp_path / "learner2.log"]
    from robot_stack import ros

    ros.init([])
    operator = Operator(ros)
    try:
        with logs[0].open("w") as log:
            learner = subprocess.Popen(learner_command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes = {"the launch": launch, "the learner": learner}
        # The operator takes over during the first episode the learner runs.
        operator.spin_until(lambda: operator.recorder.get("recording"), "the first episode", processes)
        intervened_episode = operator.recorder["episode"]
        operator.take_over(6, processes)
        operator.spin_until(lambda: _consumed_episodes(run_dir) >= 1, "a checkpoint holding an episode", processes)
        kill_at = time.monotonic() + random.uniform(0.0, 3.0)
        operator.spin_until(lambda: time.monotonic() >= kill_at, "the moment of the kill", processes)
        learner.send_signal(signal.SIGKILL)
        learner.wait()
        with logs[1].open("w") as log:
            learner = subprocess.Popen(learner_command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        operator.spin_until(lambda: learner.poll() is not None, "the restarted learner to finish",
                            {"the launch": launch}, timeout=400.0)
        text = logs[1].read_text()
        assert learner.returncode == 0, text[-3000:]
        operator.spin_until(lambda: (operator.policy.get("last_load") or {}).get("time", 0) > 0, "the policy status",
                            {"the launch": launch})
    finally:
        stop_process(learner)
        stop_process(launch)
        launch_log.close()
        operator.node.destroy_node()
        ros.shutdown()

    # The policy node runs the last model the learner exported (a new one: not the model it was launched with).
    models = sorted((run_dir / "models").glob("online_*.onnx"))
    assert models, text[-3000:]
    last_load = operator.policy["last_load"]
    assert last_load["result"] == "loaded" and last_load["onnx_sha256"] == sha256_file(models[-1])
    assert last_load["onnx_sha256"] != sha256_file(offline["model"]) and operator.policy["swaps"] >= 1

    # Every episode in the dataset is an online one; the operator's steps are flagged, in the episode it drove.
    recorded = Dataset.open(dataset)
    table = recorded.episode_table()
    assert recorded.n_episodes >= 2 and set(table["source"].tolist()) == {"online"}
    flags = recorded.frames("intervention").astype(bool)
    episode_of = recorded.episode_of(np.flatnonzero(flags))
    assert 0 < flags.sum() < len(flags) and set(episode_of.tolist()) == {intervened_episode}
    operated = np.isclose(recorded.frames("action")[flags], TELEOP_COMMAND, atol=1e-6).all(axis=1)
    assert operated.mean() >= 0.5  # the operator's command is what was recorded (a frame's action and flag may
    # come from neighbouring control steps at the take-over's edges)

    # The resumed learner's replay holds every dataset episode exactly once.
    result = json.loads((run_dir / "robot_result.json").read_text())
    robot = result["robot"]
    assert result["complete"] and "resumed:" in text, text[-3000:]
    assert robot["committed"] == recorded.n_episodes and robot["first_episode"] == 0
    assert robot["env_steps"] == int((table["length"] - 1).sum()) >= ONLINE_STEPS
    assert robot["accepted"] == robot["pushed"] >= 1 and robot["interventions"] == flags.sum()
    assert "robot learner: " in text and f"{recorded.n_episodes} episodes committed" in text


def test_the_learner_names_the_actor_topic_it_does_not_hear(dds_env, ros_session):
    from robot_stack.online.actor import ActorLink
    from robot_stack.online.options import RobotOptions

    ros = ros_session("dds")
    link = ActorLink(ros, RobotOptions(actor_timeout_s=1.0), "learner")
    with pytest.raises(RosError, match="no policy node heard on /policy/status within 1 s: start the actor side"):
        link.wait_for_actor()
    # A policy node (its latched status, a reader of /policy/load) but no recorder: the recorder's topic is named.
    policy = ros.create_node("policy")
    status = policy.create_publisher("std_msgs/msg/String", "/policy/status", ros.qos.TRANSIENT_LOCAL)
    status.publish(ros.message_class("std_msgs/msg/String")(data=json.dumps({"rate_hz": 20.0})))
    policy.create_subscription("std_msgs/msg/UInt8MultiArray", "/policy/load", lambda _m: None,
                               ros.qos.DEFAULT.with_depth(1))
    with pytest.raises(RosError, match="no recorder heard on /recorder/status within 1 s"):
        link.wait_for_actor()
    link.close()
    policy.destroy_node()


def test_an_online_dataset_of_another_robot_is_refused_in_one_line_before_training(offline, tmp_path):
    source = Dataset.open(offline["dataset"])
    other = tmp_path / "other.zarr"
    DatasetWriter.create(other, robot=dict(source.robot, name="other_arm"), record_hz=source.record_hz,
                         features=list(source.features.values()), tasks=source.tasks).close()
    result = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "train", "--algo", "iql", "--dataset",
                             str(offline["dataset"]), "--steps", "20", "--eval-every", "-1", "--online", "robot",
                             "--online-dataset", str(other), "--out", str(tmp_path / "run"), "--no-progress"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "was recorded on the robot 'other_arm'" in lines[-1] and "into a new dataset" in lines[-1]
    assert not (tmp_path / "run" / "checkpoints" / "step_00000020.pt").exists()  # it stopped before training


class StandIn:
    """The test standing in, on the learner's topics, for a position-controlled arm whose joints go where
    /teleop/command says (moving=False: they stay), a recorder that commits on stop/success/fail, and a policy
    node that answers /policy/load with `answer` (loaded or refused)."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = ros.create_node("stand_in")
        self.position, self.moving, self.answer = np.zeros(2), True, "loaded"
        self.words: list[str] = []
        self.recorder = {"recording": False, "committed_this_run": 0, "failed_this_run": 0, "episode": 0}
        self.joints = self.node.create_publisher("sensor_msgs/msg/JointState", "/joint_states", ros.qos.SENSOR_DATA)
        self.recorder_pub = self.node.create_publisher("std_msgs/msg/String", "/recorder/status",
                                                       ros.qos.TRANSIENT_LOCAL)
        self.policy_pub = self.node.create_publisher("std_msgs/msg/String", "/policy/status", ros.qos.TRANSIENT_LOCAL)
        self.node.create_subscription("std_msgs/msg/Float64MultiArray", "/teleop/command", self._on_teleop,
                                      ros.qos.DEFAULT)
        self.node.create_subscription("std_msgs/msg/String", "/recorder/control", self._on_control, ros.qos.DEFAULT)
        self.node.create_subscription("std_msgs/msg/UInt8MultiArray", "/policy/load", self._on_load,
                                      ros.qos.DEFAULT.with_depth(1))
        self._status("recorder", self.recorder)
        self._status("policy", {"rate_hz": 20.0, "last_load": None})

    def _status(self, which: str, status: dict) -> None:
        publisher = self.recorder_pub if which == "recorder" else self.policy_pub
        publisher.publish(self.ros.message_class("std_msgs/msg/String")(data=json.dumps(status)))

    def _on_teleop(self, message) -> None:
        if self.moving:
            self.position = np.asarray(message.data, float)

    def _on_control(self, message) -> None:
        self.words.append(message.data)
        if message.data == "start":
            self.recorder["recording"] = True
        else:
            self.recorder.update(recording=False, committed_this_run=self.recorder["committed_this_run"] + 1,
                                 episode=self.recorder["episode"] + 1)
        self._status("recorder", self.recorder)

    def _on_load(self, message) -> None:
        from robot_stack.deploy.card import sha256_bytes

        load = {"result": self.answer, "onnx_sha256": sha256_bytes(bytes(message.data)), "time": time.time()}
        if self.answer == "refused":
            load = {"result": "refused", "reason": "its command is not the running model's", "time": time.time()}
        self._status("policy", {"rate_hz": 20.0, "last_load": load})

    def serve(self, link, until, timeout: float = 30.0) -> None:
        """Spin both nodes (the stand-in publishes its joints each round) until until()."""
        from robot_stack.ros import convert

        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out"
            self.joints.publish(convert.joint_state(("shoulder", "elbow"), self.position, np.zeros(2)))
            self.ros.spin_once(self.node, 0.0)
            link.spin(0.01)


def test_a_joint_reset_drives_the_target_then_records_to_the_horizon_or_stops_in_one_line(dds_env, ros_session):
    from robot_stack.online.actor import ActorLink, EpisodeDriver
    from robot_stack.online.options import RobotOptions

    ros = ros_session("dds")
    target = (0.5, -0.2)
    options = RobotOptions(reset="joints", reset_joints=target, reset_timeout_s=1.0, horizon=4, actor_timeout_s=30.0)
    link = ActorLink(ros, options, "learner")
    robot = StandIn(ros)
    robot.serve(link, lambda: link.policy_status is not None and link.recorder_status is not None
                and link.joint_position is not None and link.control_pub.get_subscription_count() > 0)
    lines: list[str] = []
    driver = EpisodeDriver(link, options.horizon, lines.append)
    driver.begin()
    outcomes = []
    robot.serve(link, lambda: outcomes.append(driver.poll()) or outcomes[-1] is not None)
    assert outcomes[-1].word == "stop" and outcomes[-1].steps >= options.horizon
    assert np.allclose(robot.position, target) and robot.words == ["start", "stop"]  # reached, then recorded
    robot.moving, robot.position = False, np.zeros(2)  # a robot that does not follow
    driver.begin()
    with pytest.raises(RosError, match=r"did not reach the reset position within 1 s \(off by up to 0\.500 rad"):
        robot.serve(link, lambda: driver.poll() is not None)
    assert robot.words == ["start", "stop"]  # no episode was started
    link.close()


def test_a_refused_model_is_a_warning_and_counted_an_accepted_one_confirmed_by_its_hash(dds_env, ros_session):
    from robot_stack.deploy.card import sha256_bytes
    from robot_stack.online.actor import ActorLink, ModelPusher
    from robot_stack.online.options import RobotOptions

    ros = ros_session("dds")
    link = ActorLink(ros, RobotOptions(reset="operator", horizon=10), "learner")
    robot = StandIn(ros)
    robot.serve(link, lambda: link.policy_status is not None and link.load_pub.get_subscription_count() > 0)
    lines: list[str] = []
    pusher = ModelPusher(link, lines.append, timeout_s=30.0)
    answers = []
    for answer, model in (("refused", b"model one"), ("loaded", b"model two")):
        robot.answer = answer
        pusher.push(model, sha256_bytes(model), answer)
        robot.serve(link, lambda: answers.append(pusher.poll()) or answers[-1] is not None)
    assert [a for a in answers if a] == ["refused", "accepted"]
    assert pusher.counts == {"pushed": 2, "accepted": 1, "refused": 1, "unanswered": 0}
    assert lines[0] == ("WARNING: the policy node refused model refused: its command is not the running model's; "
                        "it keeps running the model before")
    assert lines[1].startswith(f"the policy node runs model loaded ({sha256_bytes(b'model two')[:12]})")
    link.close()
