"""The model card: stored in the ONNX metadata and beside the model, saying what the policy needs, what it
commands and where it came from; check_robot and check_swap refuse a card that does not fit. Real runs
(robot-stack train on a reach2d dataset collected in MuJoCo), real exports."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from robot_stack.cli.main import main as cli
from robot_stack.deploy.card import (
    CARD_KEY,
    ModelCard,
    check_robot,
    check_swap,
    load_model,
    raw_state,
    read_card,
)
from robot_stack.deploy.export import export_run, sticky_elements
from robot_stack.errors import DeployError
from robot_stack.learn.trainer import load_policy


@pytest.fixture(scope="module")
def exported(reach2d_runs, tmp_path_factory):
    """An IQL state policy (evaluated once in the sim at the end of training) exported with its card."""
    run_dir = reach2d_runs("iql", "--eval-every", "0", "--eval-episodes", "1")
    out = tmp_path_factory.mktemp("card") / "iql.onnx"
    return run_dir, out, export_run(run_dir, out)


def _robot_features(dataset):
    return dataset.robot | {"rate_hz": dataset.record_hz}, {n: f.to_json() for n, f in dataset.features.items()}


def test_the_card_beside_the_model_is_the_card_inside_plus_the_model_files_hash(exported):
    _, out, card = exported
    beside = json.loads(out.with_suffix(".json").read_text())
    assert beside.pop("onnx_sha256") == hashlib.sha256(out.read_bytes()).hexdigest()
    assert beside == read_card(out).data == card.data
    model_bytes, from_bytes = load_model(out.read_bytes())  # as /policy/load receives it
    assert model_bytes == out.read_bytes() and from_bytes.data == card.data
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(metadata[CARD_KEY])["format"] == "robot_stack.model_card/1"


def test_the_card_says_what_the_policy_needs_what_it_commands_and_where_it_came_from(reach2d_runs, exported):
    run_dir, _, card = exported
    dataset = reach2d_runs.dataset
    data = card.data
    _, spec, _ = load_policy(run_dir)
    assert card.spec == spec and card.inputs == {"state": [18]} and card.rate_hz == dataset.record_hz == 20.0
    features = data["observation"]["features"]
    assert list(features) == list(spec.state)
    for name, entry in features.items():  # topics and units as recorded
        assert entry["topic"] == dataset.features[name].topic and entry["units"] == dataset.features[name].units
        assert entry["shape"] == list(dataset.features[name].shape) and entry["max_age_s"] > 0
    assert features["eef_pose"]["topic"] == "/eef_pose" and card.max_age_s == max(f["max_age_s"] for f in features.values())
    assert "stale" in data["observation"]["alignment"]
    spec_of = dataset.robot["command_spec"]
    assert card.command == {"names": spec_of["names"], "low": spec_of["low"], "high": spec_of["high"],
                            "hold": spec_of["hold"], "meaning": dataset.robot["command"], "rate_hz": 20.0, "sticky": []}
    assert card.robot == dataset.robot
    run_info = json.loads((run_dir / "run.json").read_text())
    assert data["algorithm"] == "iql" and data["config"] == run_info["config"]
    assert data["dataset"] == {"path": str(dataset.path.resolve()), "fingerprint": dataset.fingerprint(),
                               "episodes": dataset.n_episodes, "frames": dataset.n_frames}
    assert data["reward"] == {"source": "sim", "label_run": None}
    checkpoint = run_dir / data["training"]["checkpoint"]
    assert data["training"]["steps"] == 20 and data["training"]["run_dir"] == str(run_dir.resolve())
    assert data["training"]["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    result = json.loads((run_dir / "result.json").read_text())
    assert data["evaluation"] == result["evaluation"] and data["evaluation"]["episodes"] == 1
    assert data["runtime"] == {"intra_op_threads": 1, "providers": ["CPUExecutionProvider"], "inputs": ["state"],
                               "output": "command"}


def test_gripper_like_command_elements_are_sticky():
    lift = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert sticky_elements(lift, {}, {}) == ["gripper"]
    assert sticky_elements(lift, {"sticky": [6]}, {}) == ["gripper"]  # the robot's own word wins
    assert sticky_elements(["dx", "dy"], {}, {"algorithm": {"binary_actions": ["dy"]}}) == ["dy"]  # CQL open/close
    assert sticky_elements(["dx", "dy"], {}, {}) == []


def test_the_robot_the_model_was_trained_for_fits(reach2d_runs, exported):
    robot, features = _robot_features(reach2d_runs.dataset)
    check_robot(exported[2], robot, features)
    check_robot(exported[2], robot, {n: {"shape": None} for n in features})  # shapes not known yet: not checked


@pytest.mark.parametrize("change, message", [
    (lambda r, f: r["command_spec"].update(names=["dx", "dy", "dz"], low=[-1] * 3, high=[1] * 3),
     "action size is 2 for the model but 3 on the robot"),
    (lambda r, f: f.pop("eef_pose"), "observation 'eef_pose' is missing on the robot"),
    (lambda r, f: r.update(command="joint_position"), "command meaning is 'eef_delta_xy"),
    (lambda r, f: f["object_pose"].update(shape=[3]), "observation 'object_pose' has shape [3] on the robot but [7]"),
    (lambda r, f: r.update(rate_hz=50.0), "rate is 20 Hz for the model but 50 Hz on the robot"),
    (lambda r, f: r["command_spec"].update(names=["dy", "dx"]), "command elements are ['dx', 'dy'] for the model"),
    (lambda r, f: r["command_spec"].update(high=[2.0, 2.0]), "command bounds are"),
])
def test_a_robot_the_card_does_not_fit_is_refused_in_one_line(reach2d_runs, exported, change, message):
    robot, features = copy.deepcopy(_robot_features(reach2d_runs.dataset))
    change(robot, features)
    with pytest.raises(DeployError, match="does not fit this robot") as error:
        check_robot(exported[2], robot, features)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_mismatch_is_named_at_once(reach2d_runs, exported):
    robot, features = copy.deepcopy(_robot_features(reach2d_runs.dataset))
    robot["command"] = "joint_position"
    features.pop("joint_velocity")
    with pytest.raises(DeployError) as error:
        check_robot(exported[2], robot, features)
    assert "command meaning" in str(error.value) and "'joint_velocity' is missing" in str(error.value)


def test_a_swap_needs_the_same_inputs_command_and_rate(reach2d_runs, exported, tmp_path):
    card = exported[2]
    check_swap(card, export_run(reach2d_runs("bc"), tmp_path / "bc.onnx"))  # another algorithm, same interface
    image = export_run(reach2d_runs("bc", "--images", "image.top", "--steps", "4"), tmp_path / "image.onnx")
    with pytest.raises(DeployError, match=r"cannot replace the running iql: inputs .*image.top.*the running model keeps"):
        check_swap(card, image)
    reordered = copy.deepcopy(card.data)  # the same features, concatenated in another order
    reordered["observation"]["spec"]["state"] = dict(reversed(list(card.spec.state.items())))
    with pytest.raises(DeployError, match=r"observation features \['object_pose', 'eef_pose'"):
        check_swap(card, ModelCard(reordered))
    other = copy.deepcopy(card.data)
    other["command"]["rate_hz"], other["command"]["meaning"] = 50.0, "joint_position"
    with pytest.raises(DeployError, match=r"command meaning joint_position instead of .*rate 50 Hz instead of 20 Hz"):
        check_swap(card, ModelCard(other))


def test_raw_state_is_the_state_features_in_spec_order_unnormalised(exported):
    spec = exported[2].spec
    values = {name: np.full((3, *shape), i, np.float64) for i, (name, shape) in enumerate(spec.state.items())}
    state = raw_state(spec, values)
    assert state.dtype == np.float32 and state.shape == (3, 18)
    assert state[0].tolist() == [0, 0, 1, 1] + [2] * 7 + [3] * 7  # joint_position, joint_velocity, eef, object
    assert raw_state(spec, {n: v[0] for n, v in values.items()}).shape == (1, 18)  # one observation, no batch axis
    with pytest.raises(DeployError, match="observation lacks eef_pose"):
        raw_state(spec, {n: v for n, v in values.items() if n != "eef_pose"})


def _rewrite_card(source, target, change):
    model = onnx.load(source)
    props = [p for p in model.metadata_props if p.key != CARD_KEY]
    data = json.loads(next(p.value for p in model.metadata_props if p.key == CARD_KEY))
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    if change is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = CARD_KEY, json.dumps(change(data))
    onnx.save(model, target)


@pytest.mark.parametrize("case, message", [
    ("absent", "does not exist"),
    ("text", "is not an ONNX model"),
    ("no_card", "has no robot_stack model card in its metadata"),
    ("newer", "model card format robot_stack.model_card/2 is newer than this robot_stack reads"),
    ("unknown", "unknown model card format 'someone.card/1'"),
    ("damaged", "the model card lacks parity"),
])
def test_a_file_that_is_not_a_model_with_a_card_is_a_one_line_error(exported, tmp_path, capsys, case, message):
    path = tmp_path / "model.onnx"
    if case == "text":
        path.write_text("robot: not a model\n")
    elif case != "absent":
        change = {"no_card": None, "newer": lambda d: d | {"format": "robot_stack.model_card/2"},
                  "unknown": lambda d: d | {"format": "someone.card/1"},
                  "damaged": lambda d: {k: v for k, v in d.items() if k != "parity"}}[case]
        _rewrite_card(exported[1], path, change)
    with pytest.raises(DeployError, match=message):
        read_card(path)
    for verb in ("info", "verify"):
        assert cli(["model", verb, str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_model_info_prints_the_card_readably_and_as_json(exported, capsys):
    _, out, card = exported
    assert cli(["model", "info", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("robot_stack.model_card/1", "planar_2link_sim (sim task reach2d)", "dx, dy in [-1, -1] .. [1, 1]",
                     "eef_pose float32 [7] [m] from /eef_pose, max age 0.25 s", "at 20 Hz", "inputs       state [18]",
                     "success", card.data["dataset"]["fingerprint"][:12], "CPUExecutionProvider", "parity"):
        assert expected in text, expected
    assert cli(["model", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == card.data


def test_a_max_age_the_dataset_stores_for_a_feature_goes_into_the_card(reach2d_runs, tmp_path):
    """The recorder does not write max_age into a dataset today; where a dataset has it, the card takes it."""
    data = shutil.copytree(reach2d_runs.dataset.path, tmp_path / "copy.zarr")
    meta = json.loads((data / "zarr.json").read_text())
    meta["attributes"]["features"]["eef_pose"]["max_age_s"] = 0.1
    (data / "zarr.json").write_text(json.dumps(meta))
    run_dir = shutil.copytree(reach2d_runs("bc"), tmp_path / "run")
    info = json.loads((run_dir / "run.json").read_text())
    info["dataset"]["path"] = str(data)
    (run_dir / "run.json").write_text(json.dumps(info))
    card = export_run(run_dir, tmp_path / "model.onnx")
    features = card.data["observation"]["features"]
    assert features["eef_pose"]["max_age_s"] == 0.1 and features["object_pose"]["max_age_s"] == 0.25
    assert card.max_age_s == 0.25  # the largest
