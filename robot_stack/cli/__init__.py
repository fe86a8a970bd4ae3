"""The ``robot-stack`` command line: one module per subcommand, registered in ``main.SUBCOMMANDS``."""
