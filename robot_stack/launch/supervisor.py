"""Run a launch plan: one OS process per node, output prefixed ``[label-N]``, ordered shutdown.

How a launch ends:
- Ctrl-C (SIGINT) or SIGTERM: nodes stop in reverse start order; exit status 0.
- a node exits non-zero (or dies on a signal): the others stop the same way; exit status 1 and
  one error line naming the node, its exit code and its last output lines.
- a node with ``on_exit: shutdown`` exits 0, or every node has exited 0: exit status 0.

Stopping a node sends SIGINT, then SIGTERM after ``sigterm_timeout`` seconds, then SIGKILL after
``sigkill_timeout`` more, as ``ros2 launch`` does. Each node runs in its own process group so a
terminal's Ctrl-C reaches only the launch, which then stops the nodes in order.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from robot_stack.errors import LaunchError
from robot_stack.launch.launch_file import LaunchPlan, NodeLaunch
from robot_stack.streams import drop_further_writes

DEFAULT_STOP_TIMEOUT_S = 5.0  # ros2 launch's default sigterm_timeout and sigkill_timeout
TAIL_LINES = 20  # lines of each node's output kept for the failure report
_POLL_S = 0.05


class _Console:
    """Writes whole lines from several threads without interleaving them."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out, self.err = out, err
        self.lock = threading.Lock()

    def write(self, line: str, *, error: bool = False) -> None:
        stream = self.err if error else self.out
        with self.lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except BrokenPipeError:
                # A closed pager must not take the nodes down: later lines go nowhere, quietly.
                drop_further_writes(stream)
            except ValueError:
                pass  # the stream was closed

    def log(self, level: str, source: str, message: str) -> None:
        self.write(f"[{level}] [{source}]: {message}", error=level in ("WARNING", "ERROR"))


class _StopRequest:
    """Records SIGINT/SIGTERM to the launch; handlers only set flags, the main loop acts."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0
        self.signal_name: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name
        self.event.set()


@dataclass
class _NodeProcess:
    node: NodeLaunch
    label: str
    argv: list[str]
    popen: subprocess.Popen
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)
    reported: bool = False

    def describe_exit(self) -> str:
        code = self.popen.returncode
        if code is not None and code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


# Loaded here, not in the forked child, where taking the dynamic loader's lock could deadlock.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_launch(parent_pid: int) -> None:
    """In the child before exec: get SIGTERM if the launch dies, so no node outlives a killed launch.

    The kernel sends it when the launch thread the node is attached to exits, and again for each launch
    thread it is then handed to, so a node of a killed launch may get several SIGTERMs within milliseconds
    (strace showed three): a node must treat repeated signals as one (the recorder does, and commits)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent_pid:  # the launch died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Starts the plan's nodes, relays their output and decides how the launch ends."""

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.plan = plan
        self.stop_timeout_s = stop_timeout_s
        self.console = _Console(out or sys.stdout, err or sys.stderr)
        self.stop_request = _StopRequest()
        self.processes: list[_NodeProcess] = []

    def run(self) -> int:
        """Run until the launch ends; returns the exit status (0 clean, 1 a node failed)."""
        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous_handlers[signum] = signal.signal(signum, self.stop_request)
        try:
            with tempfile.TemporaryDirectory(prefix="robot_stack_launch_") as params_dir:
                return self._run(Path(params_dir))
        finally:
            for process in self.processes:  # only reached with live nodes after an unexpected error
                if process.popen.poll() is None:
                    self._signal(process, signal.SIGKILL)
                    process.popen.wait()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def _run(self, params_dir: Path) -> int:
        if not self.plan.nodes:
            self.console.log("INFO", "launch", f"{self.plan.launch_file} starts no node")
            return 0
        for index, node in enumerate(self.plan.nodes, start=1):
            if self.stop_request.count:
                break
            try:
                self._start(node, f"{node.label}-{index}", params_dir)
            except OSError as error:
                self._stop_all()
                raise LaunchError(f"cannot start node from {node.origin}: {error}") from None
        failed: _NodeProcess | None = None
        while not self.stop_request.count:
            for process in self.processes:
                if process.popen.poll() is None or process.reported:
                    continue
                self._report_exit(process)
                if process.popen.returncode != 0:
                    failed = process
                    break
                if process.node.shutdown_on_exit:
                    self.console.log(
                        "INFO", "launch", f"{process.label} exited and has on_exit: shutdown; stopping the launch"
                    )
                    self._stop_all()
                    return 0
            if failed is not None:
                break
            if all(process.reported for process in self.processes):
                self.console.log("INFO", "launch", "all nodes have finished")
                return 0
            self.stop_request.event.wait(_POLL_S)
        if failed is None:
            self.console.log("INFO", "launch", f"user interrupted with {self.stop_request.signal_name}; stopping nodes")
            self._stop_all()
            return 0
        self._stop_all()
        self._join_readers(failed)
        name = failed.node.name or failed.node.executable
        lines = list(failed.tail)
        self.console.log(
            "ERROR", "launch", f"node '{name}' ({failed.label}) failed: {failed.describe_exit()}; "
            + (f"its last {len(lines)} output lines:" if lines else "it printed nothing")
        )
        for line in lines:
            self.console.write(f"    [{failed.label}] {line}", error=True)
        return 1

    def _start(self, node: NodeLaunch, label: str, params_dir: Path) -> None:
        argv = node.argv(params_dir, label)
        env = {**os.environ, **node.env, "PYTHONUNBUFFERED": "1"}
        parent_pid = os.getpid()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            process_group=0,
            preexec_fn=lambda: _die_with_launch(parent_pid),
        )
        process = _NodeProcess(node, label, argv, popen)
        self.processes.append(process)
        self.console.log("INFO", label, f"process started with pid [{popen.pid}]")
        for stream, is_stderr in ((popen.stdout, False), (popen.stderr, True)):
            # ros2 launch's output modes: 'log' keeps stdout off the screen, stderr always shows.
            show = node.output in ("screen", "both") or is_stderr
            reader = threading.Thread(
                target=self._relay, args=(process, stream, show, is_stderr), name=f"{label}-output", daemon=True
            )
            reader.start()
            process.readers.append(reader)

    def _relay(self, process: _NodeProcess, stream: IO[bytes], show: bool, is_stderr: bool) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                process.tail.append(line)
                if show:
                    self.console.write(f"[{process.label}] {line}", error=is_stderr)

    def _join_readers(self, process: _NodeProcess) -> None:
        for reader in process.readers:
            # A grandchild holding the pipe open must not hang the launch.
            reader.join(timeout=2.0)

    def _report_exit(self, process: _NodeProcess) -> None:
        process.reported = True
        self._join_readers(process)
        pid, code = process.popen.pid, process.popen.returncode
        if code == 0:
            self.console.log("INFO", process.label, f"process has finished cleanly [pid {pid}]")
        else:
            self.console.log(
                "ERROR", process.label,
                f"process has died [pid {pid}, {process.describe_exit()}, cmd '{shlex.join(process.argv)}']",
            )

    def _signal(self, process: _NodeProcess, signum: signal.Signals) -> None:
        try:
            os.killpg(process.popen.pid, signum)  # the node's group: its helper processes stop too
        except ProcessLookupError:
            pass

    def _wait(self, process: _NodeProcess, timeout_s: float) -> str:
        """Wait for the node to exit: 'exited', 'timeout', or 'hurried' when the user signals again."""
        signals_before = self.stop_request.count
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                return "exited"
            if self.stop_request.count > signals_before:
                return "hurried"
            time.sleep(_POLL_S)
        return "exited" if process.popen.poll() is not None else "timeout"

    def _stop_all(self) -> None:
        """Stop the running nodes one by one, last started first."""
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                self._stop(process)
            if not process.reported:
                process.reported = True
                self._join_readers(process)
                code = process.popen.returncode
                level = "INFO" if code in (0, -signal.SIGINT, 128 + signal.SIGINT) else "WARNING"
                self.console.log(
                    level, process.label, f"process has stopped [pid {process.popen.pid}, {process.describe_exit()}]"
                )

    def _stop(self, process: _NodeProcess) -> None:
        node = process.node
        steps = (
            (signal.SIGINT, node.sigterm_timeout, "SIGTERM"),
            (signal.SIGTERM, node.sigkill_timeout, "SIGKILL"),
        )
        for signum, timeout_s, next_name in steps:
            timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
            self._signal(process, signum)
            outcome = self._wait(process, timeout_s)
            if outcome == "exited":
                return
            if outcome == "hurried":
                reason = "interrupted again"
            else:
                reason = f"still running {timeout_s:g} s after {signum.name}"
            self.console.log("WARNING", process.label, f"{reason}; sending {next_name}")
        self._signal(process, signal.SIGKILL)
        process.popen.wait()


def run_plan(plan: LaunchPlan, *, stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
    """Run the plan's nodes until the launch ends; returns the launch's exit status."""
    return Supervisor(plan, stop_timeout_s=stop_timeout_s).run()
