"""The machine a benchmark ran on and the package versions it ran with (the "machine" and "versions" of its
result), and writing the result file."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path


def machine(packages: list[str], **facts: object) -> dict:
    """``{"machine": {...}, "versions": {...}}``, to spread into a result: ``{..., **machine(["numpy"]), ...}``.

    machine: cpu_model (/proc/cpuinfo), cores (logical CPUs this process may run on), cpu_count (logical CPUs
    of the host), memory_gb, load_average (1, 5, 15 min when called: call it before measuring, as other work on
    the machine takes cores from the benchmark), platform; then ``facts``, what only this benchmark records
    (its device, MUJOCO_GL, ...). versions: python and each of ``packages`` (None where not installed).
    Where the benchmark has imported torch already, also machine.gpu (CUDA device 0's name, None without CUDA)
    and versions.torch_cuda; torch is never imported here, so a benchmark without it pays neither the import
    nor a CUDA context.
    """
    host = {
        "cpu_model": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
    }
    versions = {"python": platform.python_version()} | {package: version(package) for package in packages}
    torch = sys.modules.get("torch")
    if torch is not None:
        host["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        versions["torch_cuda"] = torch.version.cuda  # the CUDA torch was built for (None: a CPU build)
    return {"machine": host | facts, "versions": versions}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's result as indented JSON (making its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
