"""robot_stack: learn robot skills from recorded ROS 2 data and deploy them back.

Subpackages: ``ros`` (ROS 2 interface layer), ``launch`` (YAML launch runner), ``cli``.
"""

__version__ = "0.1.0"
