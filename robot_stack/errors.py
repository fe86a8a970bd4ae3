"""The exception types a user can cause; the CLI prints them without a traceback."""


class RobotStackError(Exception):
    """Base of every error a user can cause and fix; its message says what to do."""


class RosError(RobotStackError):
    """Bad message type, value, QoS, parameter, remap or DDS configuration."""


class LaunchError(RobotStackError):
    """Malformed launch file, unknown argument, missing executable, or a node that failed."""


class SimError(RobotStackError):
    """Unknown task or dynamics preset, a bad override, or a command the simulator cannot take."""


class DatasetError(RobotStackError):
    """A missing or damaged dataset, a schema it cannot read, or data that does not fit its features."""


class LearnError(RobotStackError):
    """A training config, observation choice, reward source, checkpoint or device that cannot be used."""


class LabelError(RobotStackError):
    """An unknown labeler or judge, a dataset without the images a labeler needs, a model or endpoint that
    cannot be used, or a label run that exists."""


class DeployError(RobotStackError):
    """A run that cannot be exported, a model file or card that is missing, damaged or does not match the robot,
    or a broken link in a model's provenance chain."""
