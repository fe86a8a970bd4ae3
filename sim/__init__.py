"""MuJoCo stand-in for the robot hardware (installed as ``robot_stack.sim``).

Holds the sim robot driver node, task scenes, gymnasium envs and scripted experts.
"""
