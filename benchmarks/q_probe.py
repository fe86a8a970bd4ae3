"""What a trained critic thinks of closing the gripper at the moment the data's successful episodes grasp.

    python benchmarks/q_probe.py runs/results/lift_mixed_100ep/cql-14522d_seed0_20000 \
        runs/results/lift_mixed_100ep/iql_seed0_20000 --dataset data/results/lift_mixed_100ep.zarr

For each of the first --episodes successful episodes of the dataset, the grasp step is the first step at which
the recorded gripper command turns positive (closing) and mostly stays so for the next 12 steps. There the
probe takes the state, the policy's action, and sweeps the action's last element (the gripper) over
[-1, 1] in 9 values, printing min_i Q_i(s, a) for each. A gradient-following actor (CQL's, TD3+BC's) moves its
gripper uphill from where it is; a valley between -1 and +1 keeps an open gripper open even where Q says
closing is better. Writes benchmarks/results/q_probe.json (or --output NAME).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results"
SWEEP = np.linspace(-1.0, 1.0, 9)
HOLD = 12  # steps the gripper must mostly stay closed after the grasp step


def grasp_steps(ds, episodes: int) -> list[tuple[int, int]]:
    """(episode, step) of the grasp in the first `episodes` successful episodes that have one."""
    found = []
    for index in range(ds.n_episodes):
        if not ds.episode_info(index).success:
            continue
        gripper = np.asarray(ds.episode(index)["action"][:, -1])
        steps = [t for t in range(1, len(gripper) - HOLD) if gripper[t - 1] < 0 and (gripper[t:t + HOLD] > 0).mean() > 0.8]
        if steps:
            found.append((index, steps[0]))
        if len(found) == episodes:
            break
    return found


def probe(run: Path, checkpoint: str, frames: dict[tuple[int, int], dict]) -> list[dict]:
    """frames: (episode, step) -> that frame's features (read once for every run)."""
    import torch

    from robot_stack.learn.trainer import load_policy

    algorithm, spec, _ = load_policy(run if checkpoint == "latest" else run / "checkpoints" / checkpoint)
    rows = []
    for (episode_index, step), frame in frames.items():
        values = {name: frame[name] for name in spec.state}
        obs = {"state": torch.as_tensor(spec.state_from(values, None))}
        with torch.no_grad():
            features = algorithm.encode(obs, augment=False)
            action = algorithm.act(obs)
            swept = action.repeat(len(SWEEP), 1)
            swept[:, -1] = torch.as_tensor(SWEEP, dtype=swept.dtype)
            q = algorithm.critic(features.repeat(len(SWEEP), 1), swept).min(dim=0).values
        rows.append({"episode": episode_index, "step": step, "policy_gripper": round(float(action[0, -1]), 3),
                     "q_over_gripper": [round(float(v), 2) for v in q]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (robot-stack train --out)")
    parser.add_argument("--dataset", required=True, help="the dataset the runs trained on")
    parser.add_argument("--checkpoint", default="latest", help="checkpoint file name in each run (default: latest)")
    parser.add_argument("--episodes", type=int, default=3, help="successful episodes to probe")
    parser.add_argument("--output", default="q_probe.json")
    args = parser.parse_args()

    from robot_stack.data import Dataset

    ds = Dataset.open(args.dataset)
    points = grasp_steps(ds, args.episodes)
    frames = {(index, step): {name: np.asarray(values[step:step + 1]) for name, values in ds.episode(index).items()}
              for index, step in points}
    if not points:
        sys.exit(f"{args.dataset}: no successful episode closes its gripper for good: nothing to probe")
    result = {"benchmark": "q_probe", "dataset": args.dataset, "gripper_values": SWEEP.round(3).tolist(),
              "command": "python benchmarks/q_probe.py " + " ".join(sys.argv[1:]), "runs": {},
              **machine(["torch"]), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    for run in args.runs:
        rows = probe(run, args.checkpoint, frames)
        result["runs"][str(run)] = rows
        print(f"\n{run} ({args.checkpoint}): Q(s, policy action with gripper g), g = " + " ".join(f"{g:+.2f}" for g in SWEEP))
        for row in rows:
            print(f"  episode {row['episode']:3d} step {row['step']:3d}  policy gripper {row['policy_gripper']:+.2f}  "
                  + " ".join(f"{v:6.1f}" for v in row["q_over_gripper"]))
    write_result(RESULTS / args.output, result)


if __name__ == "__main__":
    main()
