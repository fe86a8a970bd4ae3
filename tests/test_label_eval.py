"""`robot-stack label eval`: the metric functions against hand-computed values (and scipy where it imports),
and the whole eval on a small dataset written to disk with the sim's ground-truth features and label runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import LabelError
from robot_stack.label import labelers, metrics
from robot_stack.label.base import LabelContext, LabelResult
from robot_stack.label.evaluate import evaluate

# ---- metric functions, by hand


def test_rankdata_averages_tied_ranks():
    assert metrics.rankdata(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_with_ties_is_pearson_of_average_ranks():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]: r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / np.sqrt(10))
    assert metrics.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert np.isnan(metrics.spearman([5, 5, 5], [1, 2, 3]))


def test_pearson_by_hand_and_undefined_for_constant():
    # dx = [-1, 0, 1], dy = [-2, -1, 3]: r = 5 / sqrt(2 * 14)
    assert metrics.pearson([1, 2, 3], [0, 1, 5]) == pytest.approx(5 / np.sqrt(28))
    assert np.isnan(metrics.pearson([1, 1], [0, 1]))
    assert np.isnan(metrics.pearson([1], [0]))


def test_kendall_tau_b_counts_ties_in_the_denominator():
    # pairs: 5 concordant, 0 discordant, 1 tied in x only: 5 / sqrt((6 - 1) * (6 - 0))
    assert metrics.kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / np.sqrt(30))
    assert metrics.kendall_tau_b([1, 2, 3], [3, 1, 2]) == pytest.approx(-1 / 3)  # 1 concordant, 2 discordant
    assert np.isnan(metrics.kendall_tau_b([1, 1, 1], [1, 2, 3]))
    many = np.arange(1200.0)  # more rows than one block
    assert metrics.kendall_tau_b(many, -many, rows_per_block=512) == pytest.approx(-1.0)


def test_roc_auc_counts_ties_as_half():
    assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # positive 0.5 vs negative 0.5 is a tie (1/2); the other three positive/negative pairs are ordered right
    assert metrics.roc_auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc([0.9, 0.1], [0, 1]) == pytest.approx(0.0)  # reversed scores: 0, not 1
    assert np.isnan(metrics.roc_auc([0.1, 0.2], [1, 1]))


def test_precision_recall_at_threshold():
    precision, recall = metrics.precision_recall([0.2, 0.6, 0.7, 0.4, 0.5], [0, 1, 0, 1, 1], 0.5)
    assert (precision, recall) == pytest.approx((2 / 3, 2 / 3))  # predicted 0.6, 0.7, 0.5 (>= is positive)


def test_voc_counts_unanswerable_episodes_as_zero():
    reward = np.array([0, 1, 2, 3, 5, 5, 5, 7, 1, 3, 2], float)
    starts, ends = np.array([0, 4, 7, 8]), np.array([4, 7, 8, 11])  # rising, constant, one frame, [1, 3, 2]
    voc = metrics.value_order_correlation(reward, starts, ends)
    # rho of [1, 3, 2] vs time: 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5; left out instead of 0, VOC would be 0.75
    assert voc.value == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    assert (voc.episodes, voc.unanswerable) == (4, 2)


def test_episode_correlation_skips_constant_truth_and_counts_constant_reward_zero():
    truth = np.array([0, 1, 2, 4, 4, 4, 0, 1, 2], float)
    reward = np.array([0, 1, 2, 1, 2, 3, 7, 7, 7], float)  # perfect, truth constant (skipped), reward constant (0)
    result = metrics.episode_correlation(reward, truth, np.array([0, 3, 6]), np.array([3, 6, 9]))
    assert result.value == pytest.approx(0.5)
    assert (result.episodes, result.unanswerable, result.skipped) == (2, 1, 1)


def test_pairwise_accuracy_skips_truth_ties_and_counts_abstentions():
    truth = np.array([0, 1, 2, 3, 3], float)
    reward = np.array([0, 1, 2, 2, -1], float)
    first, second = np.array([0, 2, 3, 0]), np.array([1, 3, 4, 4])
    # (0,1) agrees; (2,3) equal rewards: abstains; (3,4) tied in truth: skipped; (0,4) truth prefers 4, reward 0
    overall, bins = metrics.pairwise_accuracy(reward, truth, first, second, n_bins=2)
    assert (overall.accuracy, overall.abstain_rate, overall.compared) == (0.5, pytest.approx(1 / 3), 3)
    assert sum(b.compared for b in bins) == 3
    assert bins[0].gap[1] <= bins[-1].gap[0]  # smallest gaps first


def test_pairwise_accuracy_is_zero_for_a_reversed_reward():
    truth = np.arange(50.0)
    first, second = metrics.sample_pairs(50, 500, seed=1)
    assert (first != second).all()
    assert metrics.pairwise_accuracy(-truth, truth, first, second)[0].accuracy == 0.0


def test_metrics_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 80).astype(float), rng.integers(0, 4, 80).astype(float)  # many ties
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert metrics.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y)[0])  # tau-b is scipy's default
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    positive = y > 1
    u = stats.mannwhitneyu(x[positive], x[~positive]).statistic
    assert metrics.roc_auc(x, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()))


# ---- eval end to end on a dataset on disk

LENGTH = 25
N_EPISODES = 12


def _features(sim: bool) -> list[FeatureSpec]:
    """As robot_stack.sim.collect writes them (launch/params/recorder_reach2d.yaml)."""
    features = [FeatureSpec("timestamp", "float64", (), "time", units="s"),
                FeatureSpec("joint_position", "float32", (2,), "state", topic="/joint_states", units="rad"),
                FeatureSpec("action", "float32", (2,), "action", topic="/robot/command")]
    if sim:
        features += [FeatureSpec("sim_reward", "float32", (), "reward", topic="/sim/reward"),
                     FeatureSpec("sim_success", "bool", (), "flag", topic="/sim/success")]
    return features


def _make_dataset(path, sim: bool = True, outcomes: bool = True):
    """Even episodes succeed: sim_reward rises to 1 (sim_success once above 0.9); odd ones fail: it rises
    to a level below 0.9 that differs per episode, then falls back. Frame counts vary per episode."""
    rng = np.random.default_rng(3)
    writer = DatasetWriter.create(path, robot={"name": "planar_2link_sim"}, record_hz=20, features=_features(sim))
    clock = 0.0
    for episode in range(N_EPISODES):
        n = LENGTH + episode % 3
        t = np.arange(n) / (n - 1)
        success = episode % 2 == 0
        if success:
            reward = t ** 1.5
        else:
            level = 0.2 + 0.05 * episode
            reward = level * np.sin(np.pi * t) + 0.01 * t
        frames = {"timestamp": clock + np.arange(n) / 20, "joint_position": rng.normal(size=(n, 2)),
                  "action": rng.normal(size=(n, 2))}
        if sim:
            frames |= {"sim_reward": reward - 1.0, "sim_success": reward > 0.9}  # raw units: offset on purpose
        writer.append_frames(frames)
        writer.commit_episode("move the fingertip onto the target", success if outcomes else None, operator="test")
        clock += n / 20 + 1
    writer.close()
    return Dataset.open(path)


@pytest.fixture
def labeled(tmp_path):
    """The dataset with two runs: 'truth' (a copy of sim_reward shifted to [0, 1], marked as using the ground
    truth, with a threshold and cost in its provenance) and 'shuffled' (the same rewards, frames permuted)."""
    ds = _make_dataset(tmp_path / "reach.zarr")
    truth = ds.frames("sim_reward").astype(np.float64) + 1.0
    ds.write_labels("truth", truth, {"labeler": "preference", "judge": "oracle", "ground_truth_used": True,
                                     "threshold": 0.95, "info": {"calls": 120, "cache_hits": 30}, "seconds": 3.0})
    # provenance as the labeling job writes it: the labeler's threshold in raw units, the calibration, the cost
    ds.write_labels("shuffled", np.random.default_rng(5).permutation(truth),
                    {"labeler": "success", "calibration": {"method": "percentile-5-95", "scale": 2.0, "offset": -0.5},
                     "info": {"threshold": 0.3}, "cost": {"seconds": 6.0, "frames": ds.n_frames, "judge_calls": None}})
    return Dataset.open(tmp_path / "reach.zarr")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    """`robot-stack label ...` through the entry point: (exit status, stdout, stderr)."""
    status = main(["label", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_eval_scores_truth_near_one_shuffled_near_zero_and_the_baselines(labeled):
    report = evaluate(labeled, ["truth", "shuffled"], seed=0, pairs=4000)
    rows = {row.name: row for row in report.rows}
    assert list(rows) == ["truth", "shuffled", "time", "random"]
    truth, shuffled, time, random = (rows[name].metrics for name in rows)
    for key in ("voc", "kendall", "pearson_all", "spearman_all", "pearson_episode", "spearman_episode",
                "pair_accuracy", "auc", "final_auc"):
        assert truth[key] == pytest.approx(1.0), key
    assert truth["pair_abstain_rate"] == 0.0
    for key in ("voc", "pearson_all", "spearman_all", "pearson_episode"):
        assert abs(shuffled[key]) < 0.3, key
    assert abs(shuffled["pair_accuracy"] - 0.5) < 0.1
    assert abs(random["pair_accuracy"] - 0.5) < 0.1
    # The point: t/T ranks every successful episode perfectly, yet says nothing about which episodes
    # went well, failed ones included.
    assert time["voc"] == pytest.approx(1.0)
    assert time["kendall"] == 0.0
    assert rows["truth"].counts["voc_unanswerable"] == 0 and rows["truth"].counts["voc_episodes"] == N_EPISODES // 2
    # thresholds: the run's own (reward units); the labeler's raw 0.3 through the calibration, 2 * 0.3 - 0.5;
    # else 0.5. sim_success holds above 0.9 of the successful episodes' rise, so 0.95 misses some of it.
    assert (rows["truth"].threshold, rows["truth"].threshold_source) == (0.95, "run")
    assert (rows["shuffled"].threshold, rows["shuffled"].threshold_source) == (pytest.approx(0.1), "labeler, calibrated")
    assert (rows["time"].threshold, rows["time"].threshold_source) == (0.5, "default")
    assert truth["precision"] == 1.0 and 0 < truth["recall"] < 1
    assert rows["truth"].oracle and not rows["shuffled"].oracle
    assert rows["truth"].cost == {"judge_calls": 120, "cache_hits": 30,
                                  "seconds_per_frame": pytest.approx(3.0 / labeled.n_frames)}
    assert rows["shuffled"].cost == {"judge_calls": None, "cache_hits": None,
                                     "seconds_per_frame": pytest.approx(6.0 / labeled.n_frames)}
    assert rows["random"].cost == {"judge_calls": None, "cache_hits": None, "seconds_per_frame": None}
    bins = rows["truth"].pair_bins
    assert len(bins) == 4 and all(b["accuracy"] == 1.0 for b in bins)
    assert sum(b["pairs"] for b in bins) == rows["truth"].counts["pairs_compared"]


def test_eval_ranks_episodes_with_failures_where_voc_cannot(tmp_path):
    """A run that rises 0 -> 1 on every episode gets VOC 1 like the truth, but Kendall shows it cannot tell the
    failed episodes from the successful ones."""
    ds = _make_dataset(tmp_path / "reach.zarr")
    rises = np.concatenate([np.linspace(0, 1, stop - start) for start, stop in zip(ds.episode_starts, ds.episode_ends)])
    ds.write_labels("rises", rises ** 2, {"labeler": "progress"})
    row = evaluate(Dataset.open(ds.path), ["rises"], pairs=1000).rows[0]
    assert row.metrics["voc"] == pytest.approx(1.0)
    assert row.metrics["kendall"] < 0.3


def test_eval_command_prints_table_and_writes_json_and_png(labeled, tmp_path, capsys, monkeypatch):
    out = tmp_path / "reports" / "eval.json"
    status, printed, _ = _cli(capsys, "eval", labeled.path, "--run", "truth", "--run", "shuffled", "--out", out,
                              "--pairs", 2000)
    assert status == 0
    lines = printed.splitlines()
    assert lines[0].split()[:4] == ["run", "VOC", "Kendall", "K(succ)"]
    assert any(line.startswith("truth") and "oracle: uses ground truth" in line for line in lines)
    assert any(line.startswith("baseline:time") for line in lines)
    assert any(line.startswith("baseline:random") for line in lines)
    assert not any(line.startswith("shuffled") and "oracle" in line for line in lines)
    report = json.loads(out.read_text())
    assert [row["name"] for row in report["rows"]] == ["truth", "shuffled", "time", "random"]
    assert report["rows"][0]["oracle"] is True and report["rows"][0]["metrics"]["pearson_all"] == pytest.approx(1.0)
    assert report["pairs"] == 2000 and report["ground_truth"] == {"sim_reward": True, "sim_success": True,
                                                                  "episode_success": True}
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out} and {png}" in printed
    monkeypatch.chdir(tmp_path)  # default output: runs/label_eval/<dataset name>.json in the working folder
    assert _cli(capsys, "eval", labeled.path, "--run", "truth")[0] == 0
    assert (tmp_path / "runs" / "label_eval" / "reach.json").is_file()
    assert (tmp_path / "runs" / "label_eval" / "reach.png").is_file()


def test_unknown_run_is_one_line_listing_the_runs(labeled, capsys):
    status, _, err = _cli(capsys, "eval", labeled.path, "--run", "truth", "--run", "nope")
    assert status == 2 and err.count("\n") == 1 and err.startswith("robot-stack label: error: ")
    assert "no label run 'nope'" in err and "its runs: shuffled, truth" in err


def test_dataset_without_ground_truth_is_one_line(tmp_path, capsys):
    ds = _make_dataset(tmp_path / "real.zarr", sim=False, outcomes=False)
    ds.write_labels("progress", np.zeros(ds.n_frames), {"labeler": "progress"})
    status, _, err = _cli(capsys, "eval", ds.path, "--run", "progress", "--out", tmp_path / "x.json")
    assert status == 2 and err.count("\n") == 1 and "no sim ground truth (data/sim_reward)" in err and "data mark" in err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(LabelError):
        evaluate(Dataset.open(ds.path), ["progress"])


def test_dataset_with_outcomes_only_gets_the_success_metrics(tmp_path):
    ds = _make_dataset(tmp_path / "real.zarr", sim=False)
    rises = np.concatenate([np.linspace(0, 1, stop - start) * ((1 if index % 2 == 0 else 0.5) + 0.01 * index)
                            for index, (start, stop) in enumerate(zip(ds.episode_starts, ds.episode_ends))])
    ds.write_labels("progress", rises, {"labeler": "progress"})
    report = evaluate(Dataset.open(ds.path), ["progress"], pairs=100)
    row = report.rows[0].metrics
    assert report.ground_truth == {"sim_reward": False, "sim_success": False, "episode_success": True}
    assert row["voc"] == pytest.approx(1.0) and row["final_auc"] == pytest.approx(1.0)
    # every successful episode above every failed one: 36 concordant of 66 pairs, none tied in the scores,
    # 30 tied in the outcome
    assert row["kendall_success"] == pytest.approx(36 / np.sqrt(66 * 36))
    assert all(np.isnan(row[key]) for key in ("kendall", "pearson_all", "pair_accuracy", "auc"))


def test_a_run_that_misses_new_episodes_and_an_unwritable_out_are_one_line(labeled, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status, printed, err = _cli(capsys, "eval", labeled.path, "--run", "truth", "--out", tmp_path / "file" / "x.json")
    assert status == 2 and err.count("\n") == 1 and f"cannot write the report to {tmp_path / 'file' / 'x.json'}" in err
    writer = DatasetWriter.open(labeled.path)
    writer.append_frames({"timestamp": 1000.0 + np.arange(3), "joint_position": np.zeros((3, 2)),
                          "action": np.zeros((3, 2)), "sim_reward": np.zeros(3), "sim_success": np.zeros(3, bool)})
    writer.commit_episode("move the fingertip onto the target", False)
    writer.close()
    status, _, err = _cli(capsys, "eval", labeled.path, "--run", "truth", "--out", tmp_path / "y.json")
    assert status == 2 and err.count("\n") == 1
    assert f"label run 'truth' covers {labeled.n_frames} frames but" in err and "label the dataset again" in err


class SimRewardLabeler:
    """Test labeler: raw score = the recorded sim_reward (so it used the ground truth), with a threshold in
    raw units and judge statistics in its info, as the success labeler and the judges report them."""

    name = "sim_reward"
    needs_images = False
    needs_embeddings = False
    threshold = -0.0123  # raw units: sim_reward is in [-1, 0]; no frame sits exactly on it

    def label(self, context: LabelContext) -> LabelResult:
        return LabelResult(context.dataset.frames("sim_reward").copy(),
                           {"threshold": self.threshold, "calls": 7, "cache_hits": 3}, ground_truth_used=True)


def test_eval_reads_what_a_labeling_job_writes(tmp_path, capsys, monkeypatch):
    """`label run` then `label eval`: the job's calibration, the labeler's threshold, the cost and the
    ground-truth marker come through from the run's provenance as the job writes it."""
    monkeypatch.setitem(labelers.LABELERS, "sim_reward", f"{__name__}:SimRewardLabeler")
    ds = _make_dataset(tmp_path / "reach.zarr")
    status, _, err = _cli(capsys, "run", ds.path, "--labeler", "sim_reward", "--task", "reach", "--run", "gt",
                          "--no-progress")
    assert status == 0, err
    report = evaluate(Dataset.open(ds.path), ["gt"], pairs=2000)
    row = report.rows[0]
    assert row.oracle and row.metrics["pearson_all"] == pytest.approx(1.0)
    assert row.threshold_source == "labeler, calibrated"
    raw, success = ds.frames("sim_reward"), ds.frames("sim_success")
    expected = metrics.precision_recall(raw, success, SimRewardLabeler.threshold)
    assert (row.metrics["precision"], row.metrics["recall"]) == pytest.approx(expected)
    assert row.cost["judge_calls"] == 7 and row.cost["cache_hits"] == 3 and row.cost["seconds_per_frame"] > 0
