"""Runs ROS 2 YAML launch files without ROS 2: the file's substitutions, args and nodes (launch_file),
one OS process per node with ordered shutdown (supervisor), package share dirs and executables (package)."""
