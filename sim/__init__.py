"""MuJoCo stand-in for the robot hardware (installed as ``robot_stack.sim``).

Holds the sim robot driver node, task scenes, gymnasium envs (registered below) and scripted experts.
"""

from robot_stack.sim.envs import register_envs

# Gymnasium users expect `import robot_stack.sim` to make the RobotStack/* ids available.
register_envs()
