"""``robot-stack model info|verify MODEL``: print an exported model's card; walk its provenance chain.
Thin over robot_stack.deploy.card and robot_stack.deploy.provenance."""

from __future__ import annotations

import argparse
import json
from typing import Any

DESCRIPTION = """\
Look at an exported model (robot-stack export) before it goes on a robot.
  info    its model card: observation features and topics, the command it sends, algorithm, dataset,
          reward, training, evaluation, runtime settings and the export parity
  verify  its provenance chain, one line per link: the ONNX file's hash against its card (NAME.json),
          the card against the run folder (config, checkpoint sha256), the run against the dataset
          (fingerprint now), the reward against its label run (attributes now). Each link holds, is
          missing (not on this machine: a model shipped without its run or dataset), or is BROKEN
          (changed after the model was made). Exit status 0 only when every link holds, 1 otherwise."""

EPILOG = """\
examples:
  robot-stack model info models/iql-reach2d.onnx
  robot-stack model verify models/iql-reach2d.onnx
  robot-stack model verify models/iql-reach2d.onnx --run /mnt/runs/iql-reach2d --dataset /mnt/data/reach2d.zarr
  robot-stack model verify models/iql-reach2d.onnx --json

Bad input (no such file, not ONNX, no model card, a card of an unknown format) is a one-line error,
exit status 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="an exported model: its card (info), its provenance (verify)",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    info = verbs.add_parser("info", help="print the model card")
    info.add_argument("model", metavar="MODEL", help="the .onnx file")
    info.add_argument("--json", action="store_true", help="the card as JSON")
    info.set_defaults(func=show_info)
    check = verbs.add_parser("verify", help="walk the provenance chain: exit 0 only when every link holds")
    check.add_argument("model", metavar="MODEL", help="the .onnx file")
    check.add_argument("--run", metavar="DIR", help="the run folder, where not at the path the card names")
    check.add_argument("--dataset", metavar="PATH", help="the dataset, where not at the path the card names")
    check.add_argument("--json", action="store_true", help="the links as JSON")
    check.set_defaults(func=show_verify)


def show_info(args: argparse.Namespace) -> int:
    from robot_stack.deploy.card import read_card

    card = read_card(args.model)
    if args.json:
        print(card.to_json())
        return 0
    for label, text in card_lines(card.data):
        print(f"{label:<12} {text}")
    return 0


def card_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The card as (label, text) rows, in the order a reviewer reads it."""
    robot, command, observation = data["robot"], data["command"], data["observation"]
    sim = f" (sim task {robot['sim_task']})" if robot.get("sim_task") else ""
    hold = _numbers(command["hold"]) if command.get("hold") is not None else "none given"
    bounds = f"[{_numbers(command['low'])}] .. [{_numbers(command['high'])}]"
    made = f"made {data.get('created', '?')} by robot_stack {data.get('robot_stack_version', '?')}"
    rows = [("model", f"{data['name']}: {data['format']}, {made}"),
            ("robot", f"{robot.get('name', '?')}{sim}"),
            ("command", f"{command['meaning']}"),
            ("", (f"{', '.join(command['names'])} in {bounds}, hold [{hold}], "
                  f"sticky: {', '.join(command['sticky']) or 'none'}, at {command['rate_hz']:g} Hz")),
            ("observation", f"{observation['alignment']}; max age {observation['max_age_s']:g} s")]
    for name, feature in observation["features"].items():
        units = f" [{feature['units']}]" if feature.get("units") else ""
        source = f"from {feature.get('topic') or '?'}, max age {feature['max_age_s']:g} s"
        rows.append(("", f"{name} {feature['dtype']} {feature['shape']}{units} {source}"))
    inputs = ", ".join(f"{name} {shape}" for name, shape in observation["inputs"].items())
    rows.append(("inputs", f"{inputs} -> command"))
    config = data["config"]
    rows.append(("algorithm", (f"{data['algorithm']}, hidden {config.get('hidden_dims')}, "
                               f"batch {config.get('batch_size')}, seed {config.get('seed')}")))
    dataset = data["dataset"]
    rows.append(("dataset", (f"{dataset['path']} ({dataset['episodes']} episodes, {dataset['frames']} frames, "
                             f"fingerprint {dataset['fingerprint'][:12]})")))
    reward, label = data["reward"], data["reward"].get("label_run")
    labeled = (f" (labeler {label.get('labeler', '?')}, model {label.get('model', '?')}, "
               f"created {label.get('created', '?')})") if label else ""
    rows.append(("reward", f"{reward['source']}{labeled}"))
    training = data["training"]
    rows.append(("training", (f"{training['steps']} steps; {training['run_dir']}/{training['checkpoint']} "
                              f"(sha256 {training['checkpoint_sha256'][:12]})")))
    evaluation = data.get("evaluation")
    rows.append(("evaluation", "none (the run was not evaluated in the sim)" if not evaluation else
                 f"success {evaluation['success_rate']:.0%} over {evaluation['episodes']} sim episodes, "
                 f"mean return {evaluation['mean_return']:.3g}"))
    runtime = data["runtime"]
    rows.append(("runtime", f"{', '.join(runtime['providers'])}, {runtime['intra_op_threads']} intra-op thread(s)"))
    parity = data["parity"]
    rows.append(("parity", (f"max |torch - onnxruntime| {parity['max_abs_error']:.2g}, "
                            f"cosine {parity['cosine']:.6f} on {parity['observations']} {parity['source']}")))
    for number, command in enumerate(data.get("reproduce") or [], 1):
        rows.append(("reproduce" if number == 1 else "", f"{number}. {command}"))
    return rows


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def show_verify(args: argparse.Namespace) -> int:
    from robot_stack.deploy.provenance import HOLDS, summary, verify

    card, links = verify(args.model, args.run, args.dataset)
    holds = all(link.status == HOLDS for link in links)
    if args.json:
        print(json.dumps({"model": str(args.model), "name": card.name, "holds": holds,
                          "links": [link.to_json() for link in links], "summary": summary(links)}, indent=2))
        return 0 if holds else 1
    width = max(len(link.link) for link in links)
    for link in links:
        fix = f" -> {link.fix}" if link.fix else ""
        print(f"{link.status:<8} {link.link:<{width}}  {link.detail}{fix}")
    print(summary(links))
    return 0 if holds else 1
