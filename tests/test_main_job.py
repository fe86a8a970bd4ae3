"""`robot-stack demo`, the main job, reduced (12 reach2d episodes, 1,000 updates, 10 evaluation episodes, a 120 env step
online stage) and run once end to end as a user runs it: every stage's output exists and holds what was asked, the
labels beat their own rewards shuffled over the frames, the deployed policy beats a random one, the online stage
fine-tunes the offline IQL run and the summary and report show its run's figures, and the HTML report opens in
headless Chromium with every section and every figure. The failure paths run single stages: a failed command and a stage
that made less than asked each stop the job with the stage's name and exit status 1."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fresh_dds_env

from robot_stack.data import Dataset
from robot_stack.demo_report import SECTIONS
from robot_stack.label.evaluate import evaluate

EPISODES, EXPERTS = 12, 4
STEPS = 1000
EVAL_EPISODES = 10
ONLINE_STEPS = 120  # four reach2d episodes: the stage's plumbing, not an improvement
STAGES = ("collect", "label", "label eval", "train", "export", "verify", "deploy", "online", "reference", "report")


def robot_stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_stack.cli.main", *args], cwd=REPO, env=fresh_dds_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("main_job") / "demo"
    job = robot_stack("demo", "--out", str(out), "--episodes", str(EPISODES), "--expert-fraction", str(EXPERTS / EPISODES),
                      "--steps", str(STEPS), "--eval-episodes", str(EVAL_EPISODES), "--train-eval-episodes", "3",
                      "--label-steps", "150", "--device", "cpu", "--online-steps", str(ONLINE_STEPS), timeout=900)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    return out, job


@pytest.mark.timeout(900)
def test_each_stage_prints_its_command_and_time_then_the_summary_and_the_report_path(demo):
    out, job = demo
    text = job.stdout
    for number, stage in enumerate(STAGES, 1):
        assert f"[{number}/{len(STAGES)}] {stage}: " in text, stage
    assert text.count("  ok in ") == len(STAGES)
    for command in ("$ robot-stack launch robot_stack collect.launch.yaml task:=reach2d teleop:=scripted skill:=expert",
                    "skill:=medium", "$ robot-stack label run", "--labeler progress --set input=pixels",
                    f"$ robot-stack label eval {out / 'dataset.zarr'}", "robot-stack train --algo iql --reward labels/",
                    "robot-stack train --algo bc --reward none", f"$ robot-stack export {out / 'runs' / 'iql'}",
                    "$ robot-stack model verify", "$ robot-stack eval", "$ sim_collect --task reach2d",
                    (f"robot-stack train --init-from {out / 'runs' / 'iql'} --online sim:reach2d --online-steps "
                     f"{ONLINE_STEPS}"),
                    f"$ robot-stack export {out / 'runs' / 'iql_online'} --out {out / 'models' / 'iql_online.onnx'}"):
        assert command in text, command
    # The real robot's labelers are named in the output, not only in the docs.
    assert "--pretrained" in text and "judge=chat" in text and "endpoint=" in text
    for row in ("episodes   ", "frames     ", "labels     ", "IQL (labeled rewards)", "BC (baseline)",
                "scripted expert", "random policy", "inference p50/p99 ms", "online     IQL in sim:reach2d"):
        assert row in text, row
    assert f"report: {out / 'report.html'}" in text


@pytest.mark.timeout(900)
def test_every_stage_output_exists_and_holds_what_was_asked(demo):
    out, _ = demo
    ds = Dataset.open(out / "dataset.zarr")
    assert ds.n_episodes == EPISODES
    operators = ds.episode_table()["operator"].tolist()
    assert operators.count("scripted-expert") == EXPERTS and operators.count("scripted-medium") == EPISODES - EXPERTS
    assert {"image.top", "sim_reward", "sim_success"} <= set(ds.features)
    assert (ds.success == 1).any() and (ds.success == 0).any()  # mixed skill: the medium operator fails some
    labels = ds.read_labels("progress-px")
    assert labels.reward.shape == (ds.n_frames,) and np.isfinite(labels.reward).all()
    assert labels.attrs["labeler"] == "progress" and not labels.attrs["ground_truth_used"]
    label_eval = json.loads((out / "label_eval.json").read_text())
    assert label_eval["n_episodes"] == EPISODES and (out / "label_eval.png").stat().st_size > 0
    for algo, reward in (("iql", "labels/progress-px"), ("bc", "none")):
        result = json.loads((out / "runs" / algo / "result.json").read_text())
        assert result["steps"] == STEPS and result["algo"] == algo
        card = json.loads((out / "models" / f"{algo}.json").read_text())
        assert card["reward"]["source"] == reward and card["training"]["steps"] == STEPS
        assert card["parity"]["max_abs_error"] <= 1e-4
        verify = robot_stack("model", "verify", str(out / "models" / f"{algo}.onnx"), "--json")
        assert verify.returncode == 0 and json.loads(verify.stdout)["holds"], verify.stdout
        assert "5 of 5 links hold" in (out / "verify" / f"{algo}.txt").read_text()
        result = json.loads((out / "eval" / f"{algo}.json").read_text())
        assert result["episodes"] == EVAL_EPISODES and "policy node" in result["path"]
        assert [row["seed"] for row in result["rows"]] == list(range(1000, 1000 + EVAL_EPISODES))
        assert result["policy_status"]["steps"] >= EVAL_EPISODES * 20 and result["policy_status"]["nonfinite"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and [row["stage"] for row in summary["stages"]] == list(STAGES)


@pytest.mark.timeout(900)
def test_the_labels_beat_their_own_rewards_shuffled_over_the_frames(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "dataset.zarr"  # the demo's dataset stays as its models were trained on
    shutil.copytree(out / "dataset.zarr", copy)
    ds = Dataset.open(copy)
    reward = ds.read_labels("progress-px").reward
    ds.write_labels("shuffled", np.random.default_rng(0).permutation(reward), {"labeler": "shuffled"})
    rows = {row.name: row.metrics for row in evaluate(Dataset.open(copy), ["progress-px", "shuffled"]).rows}
    ours, shuffled = rows["progress-px"], rows["shuffled"]
    for metric, margin in {"voc": 0.4, "spearman_all": 0.2, "pair_accuracy": 0.05, "auc": 0.1}.items():
        assert ours[metric] > shuffled[metric] + margin, (metric, ours, shuffled)


def online_figures(out: Path) -> tuple[dict, list[dict]]:
    """The online run's result.json summary and its eval.jsonl rows, as the run wrote them."""
    run = out / "runs" / "iql_online"
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((run / "result.json").read_text())["online"], rows


@pytest.mark.timeout(900)
def test_the_online_stage_fine_tunes_the_offline_run_and_the_summary_and_report_show_its_files(demo):
    out, job = demo
    online, rows = online_figures(out)
    run = out / "runs" / "iql_online"
    info = json.loads((run / "run.json").read_text())
    assert info["initialized_from"]["step"] == STEPS  # the offline run's networks, no further offline updates
    assert online["target"] == "sim:reach2d" and online["env_steps"] >= ONLINE_STEPS and online["updates"] > 0
    assert Dataset.open(run / "online.zarr").n_episodes == online["episodes"] > 0
    # The switch's evaluation is the offline run's policy on the same placements: its final evaluation again.
    offline_final = json.loads((out / "runs" / "iql" / "result.json").read_text())["evaluation"]["success_rate"]
    assert rows[0]["phase"] == "offline" and rows[0]["env_steps"] == 0
    assert online["offline_success_rate"] == rows[0]["success_rate"] == offline_final
    assert rows[-1]["phase"] == "online" and rows[-1]["env_steps"] == online["env_steps"]
    assert online["final_success_rate"] == rows[-1]["success_rate"]
    figures = (f"{online['env_steps']} env steps ({online['episodes']} episodes, {online['updates']} updates): sim "
               f"success {online['offline_success_rate']:.2f} at the switch -> {online['final_success_rate']:.2f}")
    assert f"online     IQL in sim:reach2d, {figures}" in job.stdout
    card = json.loads((out / "models" / "iql_online.json").read_text())
    assert card["parity"]["max_abs_error"] <= 1e-4 and card["training"]["run_dir"] == str(run)
    assert "5 of 5 links hold" in (out / "verify" / "iql_online.txt").read_text()
    report = (out / "report.html").read_text()
    section = re.search(r'<section id="online">(.*?)</section>', report, re.DOTALL).group(1)
    assert section.count('<img src="data:image/png;base64,') == 1 and html.escape(figures) in section
    # The curve's points, as the report tabulates them beside the figure, are the run's eval.jsonl rows.
    cells = re.findall(r"<tr><td>(offline|online)</td><td>(\d+)</td><td>(\d+)</td><td>([\d.]+)</td>", section)
    assert [(phase, int(env), int(step), float(rate)) for phase, env, step, rate in cells] == [
        (row["phase"], row["env_steps"], row["step"], round(row["success_rate"], 2)) for row in rows]


@pytest.mark.timeout(900)
def test_an_online_run_shorter_than_asked_stops_the_job(demo):
    from robot_stack.cli.demo import CHECKS, StageFailed, make_plan
    from robot_stack.cli.main import build_parser

    out, _ = demo
    env_steps = online_figures(out)[0]["env_steps"]
    plan = make_plan(build_parser().parse_args(["demo", "--out", str(out), "--online-steps", str(env_steps + 1)]))
    with pytest.raises(StageFailed, match=f"collected {env_steps} env steps, {env_steps + 1} were asked for"):
        CHECKS["online"](plan)


@pytest.mark.timeout(900)
def test_a_report_without_the_online_stage_says_it_did_not_run(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "demo"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("iql_online*"))
    assert not (copy / "runs" / "iql_online").exists() and (copy / "runs" / "iql").exists()
    again = robot_stack("demo", "--out", str(copy), "--report-only")
    assert again.returncode == 0, again.stderr
    assert "  online     did not run (robot-stack demo --online-steps N, or --full, runs it)" in again.stdout
    report = (copy / "report.html").read_text()
    section = re.search(r'<section id="online">(.*?)</section>', report, re.DOTALL).group(1)
    assert "did not run" in section and "<img" not in section
    assert report.count('<img src="data:image/png;base64,') == 4


def random_success_rate() -> float:
    from robot_stack.learn.evaluate import evaluate as run_episodes
    from robot_stack.learn.evaluate import make_env
    from robot_stack.learn.observations import ObservationSpec

    env = make_env("reach2d", ObservationSpec(state={}, mean=[], std=[]))
    rng = np.random.default_rng(0)
    try:
        return run_episodes(lambda _obs: rng.uniform(-1.0, 1.0, 2), env, EVAL_EPISODES, 1000)["success_rate"]
    finally:
        env.close()


@pytest.mark.timeout(900)
def test_the_deployed_policy_beats_a_random_policy(demo):
    out, _ = demo
    iql = json.loads((out / "eval" / "iql.json").read_text())["success_rate"]
    random_rate = random_success_rate()
    demo_random = Dataset.open(out / "reference" / "random.zarr")  # the demo's own random reference, same seeds
    assert demo_random.n_episodes == EVAL_EPISODES
    assert iql >= max(random_rate, float((demo_random.success == 1).mean())) + 0.3, (iql, random_rate)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.timeout(900)
def test_the_report_opens_in_headless_chromium_with_every_section_and_figure(demo):
    out, _ = demo
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; scripts/bootstrap.sh installs it)")
    report = out / "report.html"
    # --no-sandbox: tests may run as root, where Chromium's sandbox refuses to start.
    shown = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                            "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}"><h2>[^<]+</h2>', dom), section
    # The page's own script ran after load and found every figure decoded.
    assert 'data-broken-images="0"' in dom
    assert dom.count('<img src="data:image/png;base64,') == 5  # the online stage's curve is the fifth
    console = [line for line in shown.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    assert "http://" not in dom.replace("http://HOST", "") and "https://" not in dom  # self-contained


def test_a_failed_command_stops_the_job_naming_the_stage_and_why(tmp_path, capsys):
    from robot_stack.cli.demo import Job, _prepare, make_plan
    from robot_stack.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    plan = make_plan(args)
    plan.stages = [stage for stage in plan.stages if stage.name in ("label", "train")]  # no dataset was recorded
    _prepare(plan.out)
    assert Job(plan).run() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo: FAILED at stage 1/2 label after "), err
    assert "exited with status 2" in err[0] and "dataset.zarr" in err[0] and "logs/label.log" in err[0], err
    summary = json.loads((plan.out / "summary.json").read_text())
    assert not summary["complete"] and summary["failed"]["stage"] == "label"
    assert not (plan.out / "runs").exists() and not (plan.out / "report.html").exists()


def test_a_stage_that_made_less_than_asked_stops_the_job(tmp_path):
    from robot_stack.sim.collect import collect

    from robot_stack.cli.demo import CHECKS, StageFailed, make_plan
    from robot_stack.cli.main import build_parser

    plan = make_plan(build_parser().parse_args(["demo", "--out", str(tmp_path), "--episodes", "3"]))
    collect("reach2d", plan.dataset, 2, mix={"expert": 1.0}, seed=0, cameras=["top:32x32"], progress=False)
    with pytest.raises(StageFailed, match="holds 2 episodes, 3 were asked for"):
        CHECKS["collect"](plan)


def test_an_output_folder_the_demo_did_not_make_is_refused_in_one_line(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = robot_stack("demo", "--out", str(tmp_path), "--episodes", "4")
    assert result.returncode == 2 and (tmp_path / "mine.txt").exists()
    assert result.stderr.strip().splitlines() == [
        f"robot-stack demo: error: {tmp_path} holds files this demo did not write: choose another --out, or remove it"]


def test_full_is_lift_at_the_real_size(tmp_path):
    result = robot_stack("demo", "--full", "--dry-run", "--out", str(tmp_path / "full"))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "task:=lift" in text and "cameras:=agentview:84x84" in text and "max_steps:=200" in text
    assert "skill:=expert episodes:=50" in text and "skill:=medium episodes:=150" in text
    assert "--steps 20000" in text and "--episodes 50" in text
    full = tmp_path / "full"
    assert "[8/10] online: " in text
    assert (f"$ OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 robot-stack train --init-from {full / 'runs' / 'iql'} --online sim:lift "
            f"--online-steps 20000 --online-eval-every 4000 --seed 0 --device auto --out {full / 'runs' / 'iql_online'}"
            in text)
    assert f"$ robot-stack export {full / 'runs' / 'iql_online'} --out {full / 'models' / 'iql_online.onnx'}" in text
    assert not full.exists()  # a dry run writes nothing


@pytest.mark.parametrize("flags", [[], ["--full", "--online-steps", "0"]])
def test_the_default_size_and_online_steps_0_have_no_online_stage(tmp_path, flags):
    result = robot_stack("demo", "--dry-run", "--out", str(tmp_path / "demo"), *flags)
    assert result.returncode == 0, result.stderr
    assert "--init-from" not in result.stdout and "iql_online" not in result.stdout
    assert "[9/9] report: " in result.stdout and "] online: " not in result.stdout
