"""Each download-free labeler (`progress` and `success` on pixels, `preference` with the `time` judge and with the
`oracle` judge at error_rate 0) on a recorded reach2d dataset beats a shuffled-frames baseline on `label eval`'s
metrics by a clear margin, as tests/test_label_clip.py does for `clip`.

The baseline is the run's own rewards permuted over the frames: what a labeler that ignores the images would
score with the same reward distribution. Each labeler must also rank episodes by their ground-truth return
(Kendall) above the `time` baseline, which scores 0 there (t/T has the same mean on every episode, failures
included): a labeler that reads only time fails that. Margins sit at about half the smallest gap measured over
labeler seeds 0-5 on this dataset.
(conftest.py picks the headless MuJoCo backend before anything imports mujoco.)
"""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.cli.main import main
from robot_stack.data import Dataset
from robot_stack.label.evaluate import evaluate

TASK = "move the fingertip onto the target"
# name -> (label run options, {metric: margin over the shuffled run})
LABELERS = {
    "progress": (["--labeler", "progress", "--set", "input=pixels", "--set", "steps=200"],
                 {"voc": 0.5, "spearman_all": 0.5, "pair_accuracy": 0.15, "auc": 0.25, "kendall": 0.3}),
    "success": (["--labeler", "success", "--set", "input=pixels"],
                {"voc": 0.35, "spearman_all": 0.3, "pair_accuracy": 0.1, "auc": 0.2, "kendall": 0.3}),
    "preference-time": (["--labeler", "preference", "--set", "judge=time", "--set", "pixels=true",
                         "--set", "pairs=400", "--set", "ensemble=1", "--set", "steps=150"],
                        {"voc": 0.5, "spearman_all": 0.4, "pair_accuracy": 0.12, "auc": 0.2, "kendall": 0.15}),
    "preference-oracle": (["--labeler", "preference", "--set", "judge=oracle", "--set", "error_rate=0",
                           "--set", "pixels=true", "--set", "pairs=400", "--set", "ensemble=1", "--set", "steps=150"],
                          {"voc": 0.35, "spearman_all": 0.5, "pair_accuracy": 0.15, "auc": 0.25, "kendall": 0.3}),
}


@pytest.fixture(scope="module")
def reach(reach_pixels) -> Dataset:
    """The shared recorded reach2d dataset with a camera (conftest.reach_pixels)."""
    return reach_pixels


@pytest.mark.parametrize("name", list(LABELERS))
def test_labeler_on_pixels_beats_its_rewards_on_shuffled_frames_on_label_eval(reach, name, capsys):
    options, margins = LABELERS[name]
    code = main(["label", "run", str(reach.path), *options, "--task", TASK, "--run", name, "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ds = Dataset.open(reach.path)
    reward = ds.read_labels(name).reward
    ds.write_labels(f"{name}-shuffled", np.random.default_rng(0).permutation(reward), {"labeler": "shuffled"})
    rows = {row.name: row.metrics for row in evaluate(Dataset.open(reach.path), [name, f"{name}-shuffled"]).rows}
    ours, shuffled = rows[name], rows[f"{name}-shuffled"]
    for metric, margin in margins.items():
        assert ours[metric] > shuffled[metric] + margin, (metric, ours, shuffled)
    # t/T rises on failed episodes too, so it ranks no episode above another; the images are what can.
    assert ours["kendall"] > rows["time"]["kendall"] + 0.1, (ours, rows["time"])
