"""Output streams whose reader may go away: a pager closed (`| head`), a launch killed while its nodes run."""

from __future__ import annotations

import os
from typing import IO


def drop_further_writes(stream: IO[str]) -> None:
    """Point a stream whose reader went away (or that was closed) at /dev/null, so that no later write or
    flush raises, the interpreter's own at exit included."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
