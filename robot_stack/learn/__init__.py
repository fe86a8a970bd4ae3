"""Offline RL: configs, networks, device-resident replay, algorithms (BC, TD3+BC, IQL, CQL), the trainer loop
and evaluation in the sim."""
