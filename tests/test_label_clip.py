"""The `clip` labeler (VLM-RM) end to end on a recorded sim dataset, scored by `label eval`'s metrics.

The model is conftest's tuned_clip: the tiny test CLIP briefly fine-tuned on this dataset's frames with
templated captions. The test proves the plumbing (camera frames -> cached embeddings -> text tower -> VLM-RM
projection -> dataset-wide calibration -> labels/<run>/reward -> eval), not CLIP's zero-shot ability.
"""

from __future__ import annotations

import shutil

import numpy as np
from conftest import TUNED_CLIP_CAPTIONS

from robot_stack.cli.main import main
from robot_stack.data import Dataset
from robot_stack.label.evaluate import evaluate


def test_clip_rewards_beat_shuffled_frames_on_label_eval(tmp_path, tuned_clip, capsys):
    path = tmp_path / "reach2d.zarr"
    shutil.copytree(tuned_clip["dataset"], path)
    far, _, at = TUNED_CLIP_CAPTIONS
    code = main(["label", "run", str(path), "--labeler", "clip", "--task", at, "--model", tuned_clip["model"],
                 "--set", f"baseline={far}", "--run", "clip", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ds = Dataset.open(path)
    reward = ds.read_labels("clip").reward
    # the same rewards on shuffled frames: what a labeler that ignores the images would score
    ds.write_labels("shuffled", np.random.default_rng(0).permutation(reward), {"labeler": "shuffled"})
    rows = {row.name: row.metrics for row in evaluate(Dataset.open(path), ["clip", "shuffled"]).rows}
    clip, shuffled = rows["clip"], rows["shuffled"]
    assert clip["spearman_all"] > shuffled["spearman_all"] + 0.4, (clip, shuffled)
    assert clip["pair_accuracy"] > shuffled["pair_accuracy"] + 0.15, (clip, shuffled)
    assert clip["voc"] > shuffled["voc"] + 0.3, (clip, shuffled)
    assert clip["auc"] > shuffled["auc"] + 0.2, (clip, shuffled)
