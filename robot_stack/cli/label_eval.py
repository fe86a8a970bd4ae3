"""``robot-stack label eval``: score label runs against the sim ground truth recorded in the dataset.

Thin: arguments and printing; the work is in robot_stack.label.evaluate (metrics in robot_stack.label.metrics).
robot_stack.cli.label calls `register_eval` to add the verb to the `label` command group.
"""

from __future__ import annotations

import argparse

from robot_stack.cli import arguments

DESCRIPTION = """\
Score label runs against the ground truth a simulator recorded in the dataset (data/sim_reward,
data/sim_success, the episodes' success), side by side with two baselines made on the spot: `time`
(t/(T-1) in each episode) and `random` (uniform noise from --seed). Columns:
  VOC        Spearman of reward vs time on successful episodes (an episode it cannot rank counts 0)
  Kendall    tau-b of episode scores vs ground-truth episode scores, failed episodes included
             (episode score = mean reward, on both sides); K(succ): vs the episodes' success
  Pear/Spear reward vs sim_reward, per episode (mean) and over all frames
  PairAcc    preference accuracy on seeded frame pairs (truth ties skipped), Abstain: equal rewards
  AUC        reward as a detector of sim_success per frame; Prec/Recall at the run's threshold
             (thr* = none in its provenance, 0.5 used); AUC(end): final frame vs episode success
  calls/hits/s/frame: the run's cost, from its provenance where it records it
A run that used the ground truth (the oracle judge) is marked. Without sim_reward (a real robot's
data) only VOC, K(succ) and AUC(end) are measured, from the episodes' outcomes. The dataset is
only read; the report goes to a JSON file and a PNG beside it."""

EPILOG = """\
examples:
  robot-stack label eval data/reach2d_mixed.zarr --run progress --run success
  robot-stack label eval data/lift.zarr --run pref_oracle --out runs/label_eval/lift.json --pairs 50000

Bad input (an unknown run, a dataset without ground truth) is a one-line error, exit status 2."""


def register_eval(label_subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` verb to the `robot-stack label` command group's subparsers."""
    p = label_subparsers.add_parser("eval", help="score label runs against the sim ground truth",
                                    description=DESCRIPTION, epilog=EPILOG,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="DATASET", help="the dataset (a .zarr folder) holding the label runs")
    p.add_argument("--run", dest="runs", action="append", required=True, metavar="NAME",
                   help="a label run to score (repeat for several; robot-stack label list shows them)")
    p.add_argument("--out", metavar="JSON",
                   help="where to write the JSON report; the PNG goes beside it with .png "
                        "(default: runs/label_eval/DATASET_NAME.json in the working folder)")
    p.add_argument("--pairs", type=arguments.positive_int, default=10_000, metavar="N",
                   help="frame pairs sampled for the preference accuracy (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame pairs and the random baseline "
                   "(default: %(default)s)")
    p.set_defaults(func=evaluate_runs)


def evaluate_runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_stack.data import Dataset
    from robot_stack.errors import LabelError
    from robot_stack.label import evaluate

    ds = Dataset.open(args.path)
    runs = list(dict.fromkeys(args.runs))  # a run named twice is scored once
    report = evaluate.evaluate(ds, runs, seed=args.seed, pairs=args.pairs)
    out = Path(args.out) if args.out else evaluate.default_output(ds)
    print(evaluate.format_table(report))
    try:
        json_path = evaluate.write_json(report, out)
        png_path = evaluate.plot_episodes(ds, runs, out.with_suffix(".png"))
    except OSError as error:
        raise LabelError(f"cannot write the report to {out} ({error.strerror or error}): choose another --out") from None
    print(f"wrote {json_path} and {png_path}")
    return 0
