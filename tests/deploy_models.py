"""Exported reach2d policies for the policy node and eval tests, trained once per pytest process.

A scripted-expert dataset (sim_collect, half expert, half medium), then BC runs exported with
robot_stack.deploy.export: "bc" learns enough to reach most targets; "other" has the same inputs and command
(a valid hot swap) but another seed and few steps; "poses" sees only eef_pose and object_pose (inputs that do
not match "bc", a swap that must be refused).
"""

from __future__ import annotations

from pathlib import Path

_BUILT: dict[str, Path] = {}


def reach2d_models(root: Path) -> dict[str, Path]:
    """{"dataset", "bc", "other", "poses"} -> paths under `root` (built on the first call of the process)."""
    if _BUILT:
        return dict(_BUILT)
    from robot_stack.sim.collect import main as sim_collect

    from robot_stack.cli.main import main as cli
    from robot_stack.deploy.export import export_run

    dataset = root / "reach2d.zarr"
    assert sim_collect(["--task", "reach2d", "--episodes", "60", "--mix", "expert=0.5,medium=0.5", "-o", str(dataset),
                        "-q"]) in (0, None)
    runs = {"bc": ["--steps", "300", "--batch-size", "64"],
            "other": ["--steps", "20", "--batch-size", "64", "--seed", "1"],
            "poses": ["--steps", "20", "--batch-size", "64", "--obs", "eef_pose,object_pose"]}
    for name, flags in runs.items():
        run_dir = root / "runs" / name
        assert cli(["train", "--algo", "bc", "--dataset", str(dataset), "--eval-every", "-1", "--out", str(run_dir),
                    "--no-progress", *flags]) == 0
        export_run(run_dir, root / "models" / f"{name}.onnx")
        _BUILT[name] = root / "models" / f"{name}.onnx"
    _BUILT["dataset"] = dataset
    return dict(_BUILT)
