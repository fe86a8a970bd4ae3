"""MuJoCo stand-in for the robot hardware (installed as ``robot_stack.sim``).

Holds the sim robot driver node, task scenes, gymnasium envs (registered below), scripted experts and
sim_collect (datasets straight from the experts, no ROS in the loop).
"""

import sys

from robot_stack.native import load_triton_before_osmesa

if "torch" in sys.modules:  # a training or test process: torch's triton must load before MuJoCo's OSMesa
    load_triton_before_osmesa()

from robot_stack.sim.envs import register_envs  # noqa: E402  (after the native load order is settled)

# Gymnasium users expect `import robot_stack.sim` to make the RobotStack/* ids available.
register_envs()
