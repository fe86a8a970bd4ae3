"""Node loggers printing the rcutils console format: ``[INFO] [1700000000.123456789] [node]: text``."""

from __future__ import annotations

import sys
import time

from robot_stack.streams import drop_further_writes

_SEVERITIES = {"debug": 10, "info": 20, "warn": 30, "error": 40, "fatal": 50}


class Logger:
    """rclpy-shaped logger: ``info(msg, once=..., throttle_duration_sec=..., skip_first=...)``."""

    def __init__(self, name: str, level: str = "info", stream=None) -> None:
        self.name = name
        self._level = _SEVERITIES[level]
        self._stream = stream
        self._last_emit: dict[tuple, float] = {}
        self._seen: set[tuple] = set()

    def set_level(self, level: str) -> None:
        self._level = _SEVERITIES[level]

    def get_child(self, suffix: str) -> "Logger":
        child = Logger(f"{self.name}.{suffix}", stream=self._stream)
        child._level = self._level
        return child

    def is_enabled_for(self, level: str) -> bool:
        return _SEVERITIES[level] >= self._level

    def log(self, severity: str, message: str, *, once: bool = False,
            throttle_duration_sec: float | None = None, skip_first: bool = False) -> bool:
        if _SEVERITIES[severity] < self._level:
            return False
        key = (severity, str(message)) if once or skip_first else None
        if once:
            if key in self._seen:
                return False
            self._seen.add(key)
        if skip_first:
            first = ("first",) + key
            if first not in self._seen:
                self._seen.add(first)
                return False
        now = time.monotonic()
        if throttle_duration_sec:
            site = (severity, sys._getframe(2).f_code, sys._getframe(2).f_lineno)
            if now - self._last_emit.get(site, -1e18) < throttle_duration_sec:
                return False
            self._last_emit[site] = now
        stamp = time.time_ns()
        line = f"[{severity.upper()}] [{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}] [{self.name}]: {message}\n"
        stream = self._stream or sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (BrokenPipeError, ValueError):
            # Whoever read our output is gone (a killed launch): a node finishing its shutdown (a recorder's
            # commit) must not die of its log line. Later lines go nowhere.
            drop_further_writes(stream)
            return False
        return True

    def debug(self, message, **kwargs) -> bool:
        return self.log("debug", message, **kwargs)

    def info(self, message, **kwargs) -> bool:
        return self.log("info", message, **kwargs)

    def warning(self, message, **kwargs) -> bool:
        return self.log("warn", message, **kwargs)

    warn = warning

    def error(self, message, **kwargs) -> bool:
        return self.log("error", message, **kwargs)

    def fatal(self, message, **kwargs) -> bool:
        return self.log("fatal", message, **kwargs)

