"""Offline RL: configs, networks, device-resident replay, algorithms (BC, TD3+BC, IQL, CQL), the trainer loop
and evaluation in the sim."""

from robot_stack.native import load_triton_before_osmesa

load_triton_before_osmesa()  # torch's optimizers import triton; with MuJoCo on OSMesa it must come first
