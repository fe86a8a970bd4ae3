"""ROS 2 node programs (installed as ``robot_stack.nodes``).

Each module is thin: parameters and topics in, a call into ``robot_stack``, topics out.
"""
