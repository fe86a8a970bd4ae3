"""What a trained critic thinks of closing the gripper at the moment the data's successful episodes grasp.

    python benchmarks/q_probe.py runs/results/lift_mixed_100ep/cql-14522d_seed0_20000 \
        runs/results/lift_mixed_100ep/iql_seed0_20000 --dataset data/results/lift_mixed_100ep.zarr

For each of the first --episodes successful episodes of the dataset, the grasp step is the first step at which
the recorded gripper command turns positive (closing) and mostly stays so for the next 12 steps. There the
probe takes the state, the policy's action, and sweeps the action's last element (the gripper) over
[-1, 1] in 9 values, printing min_i Q_i(s, a) for each. A gradient-following actor (CQL's, TD3+BC's) moves its
gripper uphill from where it is; a valley between -1 and +1 keeps an open gripper open even where Q says
closing is better.

It also compares each critic's values across the data's episodes with the data's own returns: the mean of
min_i Q_i(s, a) on the recorded (s, a) of the successful and of the failed episodes, beside the mean
discounted return-to-go of the same frames (sim reward, the run's gamma). A critic that ranks the failed
episodes' states above the successful ones' has its values upside down, whatever its actor does.
Writes benchmarks/results/q_probe.json (or --output NAME).
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


def probe(policy, frames: dict[tuple[int, int], dict]) -> list[dict]:
    """policy: load_policy's (algorithm, spec, config); frames: (episode, step) -> that frame's features."""
    import torch

    algorithm, spec, _ = policy
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


def values_by_outcome(policy, ds, data: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean critic value on the data's (s, a) and mean discounted return-to-go, over successful / failed episodes.

    data: every frame of the features the policies read, {name: [n_frames, ...]}, read once for all runs."""
    import torch

    from robot_stack.data.sampling import frame_rewards, return_to_go

    algorithm, spec, config = policy
    returns = return_to_go(ds, frame_rewards(ds, "feature:sim_reward"), config.gamma)  # what Q(s_t, a_t) estimates
    snap = getattr(algorithm.actor, "snap", lambda action: action)  # CQL's binary elements at their bound
    obs = {"state": torch.as_tensor(spec.state_from({name: data[name] for name in spec.state}, None))}
    action = torch.as_tensor(spec.scale(data[spec.action]))
    with torch.no_grad():
        q = algorithm.critic(algorithm.encode(obs, augment=False), snap(action)).min(dim=0).values.double().numpy()
    succeeded = np.repeat(ds.success == 1, ds.episode_ends - ds.episode_starts)  # per frame
    return {outcome: {"frames": int(mask.sum()), "mean_q": round(float(q[mask].mean()), 2),
                      "mean_return_to_go": round(float(returns[mask].mean()), 2)}
            for outcome, mask in (("success", succeeded), ("fail", ~succeeded)) if mask.any()}


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
    from robot_stack.learn.trainer import load_policy

    data: dict[str, np.ndarray] = {}  # every frame of the features the runs read, for values_by_outcome
    for run in args.runs:
        policy = load_policy(run if args.checkpoint == "latest" else run / "checkpoints" / args.checkpoint)
        rows = probe(policy, frames)
        result["runs"][str(run)] = rows
        print(f"\n{run} ({args.checkpoint}): Q(s, policy action with gripper g), g = " + " ".join(f"{g:+.2f}" for g in SWEEP))
        for row in rows:
            print(f"  episode {row['episode']:3d} step {row['step']:3d}  policy gripper {row['policy_gripper']:+.2f}  "
                  + " ".join(f"{v:6.1f}" for v in row["q_over_gripper"]))
        if "sim_reward" in ds.features:
            spec = policy[1]
            for name in [*spec.state, spec.action]:
                if name not in data:
                    data[name] = ds.frames(name).reshape(ds.n_frames, -1)
            values = values_by_outcome(policy, ds, data)
            result.setdefault("values_by_outcome", {})[str(run)] = values
            print("  data's (s, a): " + ", ".join(f"{outcome} episodes mean Q {v['mean_q']:.1f} "
                                                  f"(return-to-go {v['mean_return_to_go']:.1f})" for outcome, v in values.items()))
    write_result(RESULTS / args.output, result)


if __name__ == "__main__":
    main()
