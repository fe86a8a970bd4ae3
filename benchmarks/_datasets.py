"""The benchmarks' datasets: medium-skill sim_collect recordings under data/results/, collected once and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def medium_dataset(task: str, episodes: int, seed: int = 0, dynamics: str = "nominal") -> Path:
    """data/results/<task>[_<dynamics>]_medium_<episodes>ep.zarr: `episodes` medium-skill episodes of `task` recorded
    under the dynamics preset `dynamics` (named only when not nominal), collected on first use."""
    variant = "" if dynamics == "nominal" else f"_{dynamics}"
    path = REPO / "data" / "results" / f"{task}{variant}_medium_{episodes}ep.zarr"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "robot_stack.sim.collect", "--task", task, "--episodes", str(episodes),
                        "--mix", "medium=1.0", "--seed", str(seed), "--dynamics", dynamics, "-o", str(path), "-q"],
                       check=True)
    return path
