"""``robot-stack export RUN``: a training run's policy as one ONNX file with its model card; thin over
robot_stack.deploy.export."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export the deterministic actor of a training run (robot-stack train) as one ONNX file for the policy
node: observation normalisation, the image encoder and the scaling onto the command bounds are inside
the graph (inputs: state float32 [B, S] raw, image.<camera> uint8 [B, H, W, 3]; output: command
float32 [B, A]; dynamic batch axis). The model card (what the model needs, what it commands, where it
came from) is stored in the ONNX metadata and beside the model as NAME.json. Before anything is
written, the graph runs in onnxruntime on up to 256 frames of the run's dataset next to the run's
torch actor; an export that differs by more than 1e-4 is refused and writes nothing."""

EPILOG = """\
examples (paths are relative to the folder you run in):
  robot-stack export runs/iql-reach2d-20261121-101500          # -> models/iql-reach2d-20261121-101500.onnx
  robot-stack export runs/bc-lift --out models/lift_bc.onnx
  robot-stack export runs/bc-lift --checkpoint step_00020000.pt --out models/lift_bc_20k.onnx
then: robot-stack model info models/lift_bc.onnx; robot-stack model verify models/lift_bc.onnx

Bad input (no run folder, no checkpoint, the run's dataset gone, parity above 1e-4) is a one-line
error, exit status 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="a training run's policy as ONNX + model card",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", help="the run folder (runs/<name>)")
    parser.add_argument("--out", metavar="MODEL",
                        help="the model file, NAME.onnx (default: models/<run folder name>.onnx); the card goes "
                             "beside it as NAME.json")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="a checkpoint of the run (a path, or a file name in RUN/checkpoints; default: the latest)")
    parser.add_argument("--reproduce", metavar="COMMAND", action="append", default=[],
                        help="a command that makes this model again from nothing, in order (repeat for several); kept "
                             "in the card as reproduce, for a model shipped without its dataset and run folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robot_stack.deploy.export import default_model_path, export_run

    card = export_run(args.run_dir, args.out, args.checkpoint, reproduce=args.reproduce)
    out = args.out or default_model_path(args.run_dir)
    parity, command = card.data["parity"], card.command
    inputs = ", ".join(f"{name} {shape}" for name, shape in card.inputs.items())
    print(f"{out}: {card.data['algorithm']} policy, {inputs} -> command [{len(command['low'])}] "
          f"({', '.join(command['names'])}) at {card.rate_hz:g} Hz")
    print(f"parity: max |torch - onnxruntime| {parity['max_abs_error']:.2g}, cosine {parity['cosine']:.6f} "
          f"on {parity['observations']} dataset frames")
    print(f"card: in the model's metadata and {card.data['name']}.json beside it; "
          f"check it with robot-stack model verify {out}")
    return 0
