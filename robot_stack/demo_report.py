"""The main job's summary table and its HTML report, read from the files `robot-stack demo` leaves in its folder.

One self-contained HTML file: inline CSS, every figure a base64 PNG drawn with matplotlib, one small script
that marks an image the browser could not decode (``data-broken-images`` on <body>). Sections (element ids):
summary, episode, rewards, training, success, online, latency, provenance, commands, real-robot (online says the
stage did not run where the job had none).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import RobotStackError

SECTIONS = ("summary", "episode", "rewards", "training", "success", "online", "latency", "provenance", "commands",
            "real-robot")
ONLINE_RUN = "iql_online"  # runs/<this>: the online stage's run
ALGOS = {"iql": "IQL (labeled rewards)", "bc": "BC (baseline)"}
LABEL_COLUMNS = {"voc": "VOC", "kendall": "Kendall", "kendall_success": "K(succ)", "spearman_all": "Spearman",
                 "pair_accuracy": "pair acc.", "auc": "AUC"}
FILMSTRIP_FRAMES = 8


class ReportError(RobotStackError):
    """The demo folder lacks what the report needs (a job that did not finish, a file removed)."""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"{path} cannot be read ({error}): run robot-stack demo again") from None


def gather(out: str | Path) -> dict[str, Any]:
    """The figures of a finished demo folder: {summary, dataset, label, runs, models, eval, reference, online}
    (online: None where the job had no online stage)."""
    from robot_stack.data import Dataset

    out = Path(out)
    summary = _json(out / "summary.json")
    if summary.get("failed"):
        failed = summary["failed"]
        raise ReportError(f"the job in {out} stopped at stage {failed['stage']} ({failed['reason']}): "
                          "run robot-stack demo again")
    ds = Dataset.open(out / "dataset.zarr")
    table = ds.episode_table()
    operators: dict[str, list[int]] = {}
    for operator, success in zip(table["operator"], table["success"]):
        counts = operators.setdefault(str(operator), [0, 0])
        counts[0] += 1
        counts[1] += int(success == 1)
    cameras = [name for name in ds.features if name.startswith("image.")]
    label_eval = _json(out / "label_eval.json")
    runs, models, evals = {}, {}, {}
    for algo in ALGOS:
        run_dir = out / "runs" / algo
        runs[algo] = {"result": _json(run_dir / "result.json"), "curve": _eval_curve(run_dir / "eval.jsonl"),
                      "scalars": _scalars(run_dir / "tb")}
        card = _json(out / "models" / f"{algo}.json")
        models[algo] = {"path": str(out / "models" / f"{algo}.onnx"), "parity": card["parity"],
                        "sha256": card.get("onnx_sha256", ""), "reward": card["reward"]["source"],
                        "verify": (out / "verify" / f"{algo}.txt").read_text()}
        evals[algo] = _json(out / "eval" / f"{algo}.json")
    return {
        "out": str(out), "summary": summary,
        "dataset": {"path": str(ds.path), "episodes": ds.n_episodes, "frames": ds.n_frames,
                    "camera": cameras[0] if cameras else None, "record_hz": ds.record_hz,
                    "successful": int((table["success"] == 1).sum()), "failed": int((table["success"] == 0).sum()),
                    "by_operator": operators, "task": ds.tasks[0] if ds.tasks else ""},
        "label": {"run": summary["label_run"], "rows": {row["name"]: row for row in label_eval["rows"]},
                  "png": str(out / "label_eval.png")},
        "runs": runs, "models": models, "eval": evals,
        "reference": {skill: reference_success(out, skill) for skill in ("expert", "random")},
        "online": online_run(out),
    }


def online_run(out: str | Path) -> dict[str, Any] | None:
    """The online stage's run: {result (result.json's "online" summary), target, rows (eval.jsonl: phase, env_steps,
    step, success_rate, mean_return)}, or None where the stage did not run."""
    run_dir = Path(out) / "runs" / ONLINE_RUN
    if not (run_dir / "result.json").exists():
        return None
    result = _json(run_dir / "result.json")
    if not result.get("online"):
        raise ReportError(f"{run_dir / 'result.json'} has no online summary: run robot-stack demo again")
    path = run_dir / "eval.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {"path": str(run_dir), "summary": result["online"], "rows": rows}


def reference_success(out: str | Path, skill: str) -> float | None:
    """Success rate of the reference run reference/<skill>.zarr (success at any step, as eval counts), or None
    where it is missing or empty."""
    from robot_stack.data import Dataset

    try:
        ds = Dataset.open(Path(out) / "reference" / f"{skill}.zarr")
    except RobotStackError:
        return None
    return float((ds.success == 1).mean()) if ds.n_episodes else None


def _eval_curve(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(int(row["step"]), float(row["success_rate"])) for row in rows]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars train/* of a run: {tag: [(step, value)]}; empty without tensorboard or logs."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:
        return {}
    if not folder.exists():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag[len("train/"):]: [(int(e.step), float(e.value)) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if tag.startswith("train/") and tag != "train/updates_per_s"}


# ------------------------------------------------------------------------------------------------ the table


def _percentiles(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("n"):
        return "-"
    return f"{figures['p50']:.3f} / {figures['p99']:.3f}"


def success_rows(facts: dict[str, Any]) -> list[tuple[str, float | None, str, str]]:
    """(who, success rate, inference p50/p99 ms, tick-to-command p50/p99 ms) for each policy and the references."""
    rows = []
    for algo, name in ALGOS.items():
        result = facts["eval"][algo]
        status = result.get("policy_status") or {}
        rows.append((name, result["success_rate"], _percentiles(status.get("inference_ms")),
                     _percentiles(status.get("control_ms"))))
    rows.append(("scripted expert", facts["reference"]["expert"], "-", "-"))
    rows.append(("random policy", facts["reference"]["random"], "-", "-"))
    return rows


def online_line(facts: dict[str, Any]) -> str:
    """The online stage in one line: where, how long, and the sim success at the switch -> at the end."""
    online = facts.get("online")
    if online is None:
        return "did not run (robot-stack demo --online-steps N, or --full, runs it)"
    summary = online["summary"]
    return (f"IQL in {summary['target']}, {summary['env_steps']} env steps ({summary['episodes']} episodes, "
            f"{summary['updates']} updates): sim success {_number(summary['offline_success_rate'], 2)} at the switch "
            f"-> {_number(summary['final_success_rate'], 2)}")


def summary_table(facts: dict[str, Any]) -> str:
    """The job's summary as fixed-width text (what the terminal shows at the end)."""
    summary, data, label = facts["summary"], facts["dataset"], facts["label"]
    operators = ", ".join(f"{name}: {wins}/{n} successful" for name, (n, wins) in sorted(data["by_operator"].items()))
    def metrics(name: str) -> str:
        values = label["rows"][name]["metrics"]
        return "  ".join(f"{short} {_number(values.get(key))}" for key, short in LABEL_COLUMNS.items())

    lines = [
        f"summary: {summary['task']} in {clock(summary['seconds'])} on {summary['cpus']} CPU cores"
        + (f" (load average {summary['load_average'][0]:.1f} when it finished)" if summary.get("load_average") else ""),
        f"  episodes   {data['episodes']} recorded over DDS ({operators})",
        f"  frames     {data['frames']} at {data['record_hz']:g} Hz, camera {data['camera']}",
        f"  labels     {label['run']} vs ground truth: {metrics(label['run'])}",
        f"             baseline t/T:           {metrics('time')}",
        f"             baseline random:        {metrics('random')}",
        (f"  success    {summary['eval_episodes']} episodes each, placement seeds {summary['eval_seed']}.. "
         "(policies through the policy node over DDS; references in the sim)"),
        f"    {'who':<24}{'success':>8}   {'inference p50/p99 ms':<22}{'tick to command p50/p99 ms'}",
    ]
    for who, rate, inference, control in success_rows(facts):
        lines.append(f"    {who:<24}{_number(rate, 2):>8}   {inference:<22}{control}".rstrip())
    lines.append(f"  online     {online_line(facts)}")
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def clock(seconds: float) -> str:
    """`1m 05s`, `42s`."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


# ------------------------------------------------------------------------------------------------ figures


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def filmstrip(facts: dict[str, Any]) -> str:
    """One successful and one failed episode (where there is one): FILMSTRIP_FRAMES camera frames each, with
    the labeled reward and the sim reward of each frame."""
    from robot_stack.data import Dataset

    plt = _pyplot()
    ds = Dataset.open(facts["dataset"]["path"])
    camera = facts["dataset"]["camera"]
    success = ds.success
    picks = [(int(np.flatnonzero(success == outcome)[0]), word) for outcome, word in ((1, "successful"), (0, "failed"))
             if (success == outcome).any()]
    labels = ds.read_labels(facts["label"]["run"]).reward
    truth = ds.frames("sim_reward") if "sim_reward" in ds.features else None
    figure, axes = plt.subplots(len(picks), FILMSTRIP_FRAMES, figsize=(1.6 * FILMSTRIP_FRAMES, 2.0 * len(picks)),
                                squeeze=False)
    for row, (episode, word) in enumerate(picks):
        span = ds.episode_slice(episode)
        frames = ds.frames(camera, span.start, span.stop)
        chosen = np.unique(np.linspace(0, len(frames) - 1, FILMSTRIP_FRAMES).round().astype(int))
        for column, ax in enumerate(axes[row]):
            ax.axis("off")
            if column >= len(chosen):
                continue
            t = chosen[column]
            ax.imshow(frames[t])
            text = f"t={t / ds.record_hz:.2f}s\nlabel {labels[span.start + t]:.2f}"
            if truth is not None:
                text += f"  sim {truth[span.start + t]:.3f}"
            ax.set_title(text, fontsize=7)
        axes[row][0].text(-0.1, 0.5, f"episode {episode}\n({word})", transform=axes[row][0].transAxes,
                          ha="right", va="center", fontsize=8)
    return _png(figure)


def training_curves(facts: dict[str, Any]) -> str:
    """Every train/* scalar of the runs against updates, and the sim success of the training evaluations."""
    plt = _pyplot()
    tags = sorted({tag for run in facts["runs"].values() for tag in run["scalars"]})
    panels = len(tags) + 1
    columns = min(4, panels)
    rows = (panels + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, tag in zip(flat, tags):
        for algo, run in facts["runs"].items():
            if tag in run["scalars"]:
                steps, values = zip(*run["scalars"][tag])
                ax.plot(steps, values, marker=".", label=algo.upper())
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("updates", fontsize=8)
        ax.legend(fontsize=7)
    ax = flat[len(tags)]
    for algo, run in facts["runs"].items():
        if run["curve"]:
            steps, rates = zip(*run["curve"])
            ax.plot(steps, rates, marker="o", label=algo.upper())
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("sim success during training", fontsize=9)
    ax.set_xlabel("updates", fontsize=8)
    ax.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    figure.tight_layout()
    return _png(figure)


def online_curve(online: dict[str, Any]) -> str:
    """Sim success rate and mean return of the online run's evaluations over env steps, the switch (the offline
    policy, env step 0) marked."""
    plt = _pyplot()
    offline = [row for row in online["rows"] if row.get("phase") == "offline"][-1:]
    rows = offline + [row for row in online["rows"] if row.get("phase") == "online"]
    steps = [row["env_steps"] for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.0))
    for ax, key, title in ((axes[0], "success_rate", "sim success rate"), (axes[1], "mean_return", "mean return (the sim's reward)")):
        ax.plot(steps, [row[key] for row in rows], marker="o", color="#1f77b4", label="IQL fine-tuned")
        ax.axvline(0, color="#d62728", linestyle="--", label="switch (offline policy)")
        warmup = online["summary"].get("warmup_steps") or 0
        if warmup:
            ax.axvline(warmup, color="#7f7f7f", linestyle=":", label="warm-up ends")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylim(-0.05, 1.05)
    figure.tight_layout()
    return _png(figure)


def success_bars(facts: dict[str, Any]) -> str:
    """Success rate of each policy through the policy node, the scripted expert and a random policy."""
    plt = _pyplot()
    rows = success_rows(facts)
    figure, ax = plt.subplots(figsize=(6.5, 3.0))
    names = [who for who, *_ in rows]
    rates = [rate if rate is not None else 0.0 for _, rate, *_ in rows]
    bars = ax.bar(names, rates, color=["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"])
    for bar, rate in zip(bars, rates):
        ax.text(bar.get_x() + bar.get_width() / 2, rate + 0.02, f"{rate:.2f}", ha="center", fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("success rate")
    ax.set_title(f"{facts['summary']['eval_episodes']} episodes each on the same placements", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return _png(figure)


# ------------------------------------------------------------------------------------------------ HTML


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = "<thead><tr>" + "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header) + "</tr></thead>" \
        if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _image(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; } pre { background: #f6f6f6; padding: .6em; white-space: pre-wrap;
font-size: .8em; } .note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .5em .8em; }
"""
# Marks undecodable images on <body> so a headless browser (the test) and a reader both see it.
SCRIPT = """
window.addEventListener("load", function () {
  var broken = Array.prototype.filter.call(document.images, function (img) { return !img.naturalWidth; });
  document.body.setAttribute("data-broken-images", String(broken.length));
  broken.forEach(function (img) { img.insertAdjacentText("afterend", "[figure could not be shown]"); });
});
"""


def render(facts: dict[str, Any], figures: dict[str, str]) -> str:
    """The report's HTML from gather()'s facts and {episode, rewards, training, success, online (where the job had
    the stage)}: base64 PNGs."""
    summary, data, label = facts["summary"], facts["dataset"], facts["label"]
    e = html.escape
    ours = label["rows"][label["run"]]["metrics"]
    label_line = (f"{label['run']}: VOC {_number(ours.get('voc'))}, pair accuracy {_number(ours.get('pair_accuracy'))} "
                  "vs ground truth")
    label_rows = [[name, *(_number(row["metrics"].get(key)) for key in LABEL_COLUMNS)]
                  for name, row in label["rows"].items()]
    success = [[who, _number(rate, 2), inference, control] for who, rate, inference, control in success_rows(facts)]
    latency = []
    for algo, name in ALGOS.items():
        status = facts["eval"][algo].get("policy_status") or {}
        latency.append([name, _percentiles(status.get("inference_ms")), _percentiles(status.get("control_ms")),
                        _percentiles(status.get("end_to_end_ms")), status.get("steps", "-"), status.get("held", "-"), status.get("stale", "-"),
                        status.get("clipped", "-"), status.get("missed", "-")])
    operators = [[name, n, wins, _number(wins / n, 2)] for name, (n, wins) in sorted(data["by_operator"].items())]
    provenance = "".join(
        f"<h3>{e(ALGOS[algo])}: {e(model['path'])}</h3><p>reward {e(model['reward'])}; export parity: max abs error "
        f"{model['parity']['max_abs_error']:.2e} on {model['parity']['observations']} dataset frames; sha256 "
        f"{e(model['sha256'][:12])}</p><pre>{e(model['verify'])}</pre>" for algo, model in facts["models"].items())
    timings = {row["stage"]: row["seconds"] for row in summary["stages"]}
    commands = "".join(
        f"<h3>{e(stage['stage'])}{' (' + clock(timings[stage['stage']]) + ')' if stage['stage'] in timings else ''}"
        f"</h3><p>{e(stage['what'])}</p><pre>{e(chr(10).join(stage['commands']))}</pre>"
        for stage in summary["commands"])
    load = summary.get("load_average")
    online = facts.get("online")
    if online is None:
        online_html = ("<p>The online fine-tuning stage did not run: <code>robot-stack demo --online-steps N</code> "
                       "(or <code>--full</code>) fine-tunes the IQL run in the sim after deployment.</p>")
    else:
        points = [[row.get("phase", ""), row.get("env_steps", "-"), row.get("step", "-"),
                   _number(row.get("success_rate"), 2), _number(row.get("mean_return"), 2)] for row in online["rows"]]
        online_html = (f"<p>The IQL run ({e(online['path'])}) went on in {e(online['summary']['target'])}: its networks "
                       "and config, no more offline updates, rewards from the label run's model on each new episode's "
                       "frames; sim evaluations of the deterministic policy on the training evaluations' placements, "
                       f"their return the sim's own reward ({e(online['path'])}/eval.jsonl).</p>"
                       f"<p>{e(online_line(facts))}</p>"
                       f"{_image(figures['online'], 'online fine-tuning: success rate and return over env steps')}"
                       f"{_table(['phase', 'env steps', 'updates', 'success', 'mean return'], points)}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>robot_stack demo: {e(summary['task'])}</title>
<style>{STYLE}</style><script>{SCRIPT}</script></head>
<body>
<h1>robot_stack demo: {e(summary['task'])}, "{e(data['task'])}"</h1>
<section id="summary"><h2>Summary</h2>
<p>Collect over ROS 2 topics &rarr; label rewards &rarr; train IQL and BC &rarr; export and verify &rarr; deploy
through the policy node &rarr; evaluate, in {clock(summary['seconds'])} on {summary['cpus']} CPU cores{
    f' (load average {load[0]:.1f} at the end: other work shared the machine)' if load else ''}.</p>
{_table(None, [
    ['episodes', f"{data['episodes']} ({data['successful']} successful, {data['failed']} failed by the operator's marks)"],
    ['frames', f"{data['frames']} at {data['record_hz']:g} Hz, camera {data['camera']}"],
    ['label run', label_line],
    ['evaluation', f"{summary['eval_episodes']} episodes per policy, placement seeds {summary['eval_seed']}.."],
    ['online fine-tuning', online_line(facts)],
])}
{_table(['who', 'success', 'inference p50/p99 ms', 'tick to command p50/p99 ms'], success)}
</section>
<section id="episode"><h2>An episode's frames</h2>
<p>Camera {e(str(data['camera']))}; under each frame its labeled reward ({e(label['run'])}) and the sim's reward
(minus the distance to the goal, ground truth the labeler never saw).</p>
{_table(['operator', 'episodes', 'successful', 'rate'], operators)}
{_image(figures['episode'], 'frames of a successful and a failed episode')}</section>
<section id="rewards"><h2>Reward labels vs ground truth</h2>
<p>robot-stack label eval: the label run beside two baselines (t/T, which rises on failed episodes too, and
random). VOC: rank correlation with time on successful episodes; Kendall: episodes ranked by mean reward vs by
true return, failures included; pair acc.: the higher-reward frame of a pair is the truly better one; AUC: the
reward as a detector of the sim's success.</p>
{_table(['run', *LABEL_COLUMNS.values()], label_rows)}
{_image(figures['rewards'], 'reward curves against the sim ground truth')}</section>
<section id="training"><h2>Training curves</h2>
<p>TensorBoard scalars of each run (runs/iql, runs/bc: tensorboard --logdir {e(facts['out'])}/runs) and the sim
success of the evaluations during training (eval.jsonl).</p>
{_image(figures['training'], 'training curves')}</section>
<section id="success"><h2>Success</h2>
<p>The exported models run in the policy node (onnxruntime, safety filter, watchdog) against the sim robot node
over DDS; the scripted expert and a random policy run in the sim on the same placements.</p>
{_image(figures['success'], 'success rates')}</section>
<section id="online"><h2>Online fine-tuning</h2>{online_html}</section>
<section id="latency"><h2>Policy latency</h2>
<p>From the policy node's /policy/status after the last episode, p50 / p99 in milliseconds: inference
(onnxruntime alone), tick to command (the control tick's start to the command published) and end to end (the
newest input's arrival to the command published: it includes the wait for the next tick, up to one control
period). Steps, held (stale input or e-stop), clipped and missed ticks are counts.</p>
{_table(['policy', 'inference', 'tick to command', 'end to end', 'steps', 'held', 'stale', 'clipped', 'missed'],
        latency)}
</section>
<section id="provenance"><h2>Models and provenance</h2>{provenance}</section>
<section id="commands"><h2>Each stage alone</h2>{commands}</section>
<section id="real-robot"><h2>On a real robot</h2><p class="note">{e(summary['real_robot_note'])}</p></section>
</body></html>
"""


def write_report(facts: dict[str, Any], path: str | Path) -> Path:
    """Draw the figures and write the report to `path`."""
    path = Path(path)
    rewards_png = Path(facts["label"]["png"])
    if not rewards_png.exists():
        raise ReportError(f"{rewards_png} (label eval's figure) is missing: run robot-stack demo again")
    figures = {"episode": filmstrip(facts), "rewards": base64.b64encode(rewards_png.read_bytes()).decode("ascii"),
               "training": training_curves(facts), "success": success_bars(facts)}
    if facts.get("online") is not None:
        figures["online"] = online_curve(facts["online"])
    path.write_text(render(facts, figures))
    return path
