"""Load order of native libraries that clash when loaded the other way round.

MuJoCo's CPU renderer (MUJOCO_GL=osmesa: Mesa's llvmpipe) and triton (which torch imports with its
optimizers and compiler) each carry an LLVM; loading triton after OSMesa crashes the process with a
segmentation fault. Importing triton first is safe, so every module that brings in either calls this.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def load_triton_before_osmesa() -> None:
    """Import triton now if torch can use it and MuJoCo may still load OSMesa in this process.

    Raises ImportError (instead of the crash that would follow) when MuJoCo already runs on OSMesa.
    """
    if "triton" in sys.modules or os.environ.get("MUJOCO_GL", "").lower() != "osmesa":
        return
    if importlib.util.find_spec("triton") is None:
        return
    if "mujoco" in sys.modules:
        raise ImportError("MuJoCo was imported with MUJOCO_GL=osmesa before torch's triton, and loading triton "
                          "now would crash the process: import robot_stack.learn (or torch) before robot_stack.sim "
                          "or mujoco, or use MUJOCO_GL=egl on a GPU machine")
    import triton  # noqa: F401  (loaded for its side effect: its LLVM goes first)
