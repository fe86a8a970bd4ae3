"""Operator input -> robot commands and recorder events, independent of where the input comes from.

A command is the robot's end-effector delta + gripper vector (``CommandSpec`` of
the robot, values in [-1, 1]). Keyboard (a terminal, works over SSH) and
gamepad/SpaceMouse (evdev) inputs map to it here; the teleop node publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Recorder control words (ARCHITECTURE.md, /recorder/control).
START, STOP, SUCCESS, FAIL, DISCARD = "start", "stop", "success", "fail", "discard"

KEYBOARD_HELP = """\
keys: w/s +x/-x  a/d +y/-y  r/f +z/-z  u/o roll  i/k pitch  j/l yaw  space gripper open/close
      enter start/stop recording   y success   n fail   x discard   h help   ctrl-c quit"""

# key -> (command index, sign)
_KEY_AXES = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
}
_KEY_EVENTS = {"y": SUCCESS, "n": FAIL, "x": DISCARD}


@dataclass
class KeyboardTeleop:
    """Key presses -> a command held for ``hold_ticks`` control ticks (terminals repeat keys ~30 Hz).

    ``command_dim`` elements; ``gripper_index`` (or None) toggles between -1 (open) and +1 (closed).
    """

    command_dim: int
    gripper_index: int | None = None
    speed: float = 1.0  # magnitude of a key's command element, in command units
    hold_ticks: int = 3
    recording: bool = False
    _command: np.ndarray = field(init=False)
    _ticks_left: int = field(default=0, init=False)
    _gripper: float = field(default=-1.0, init=False)

    def __post_init__(self) -> None:
        self._command = np.zeros(self.command_dim)

    def press(self, key: str) -> str | None:
        """Feed one key; returns a recorder event word, or None."""
        if key in ("\r", "\n"):
            self.recording = not self.recording
            return START if self.recording else STOP
        if key in _KEY_EVENTS:
            self.recording = False
            return _KEY_EVENTS[key]
        if key == " " and self.gripper_index is not None:
            self._gripper = -self._gripper
            return None
        axis = _KEY_AXES.get(key.lower())
        if axis and axis[0] < self.command_dim and axis[0] != self.gripper_index:
            self._command[:] = 0.0
            self._command[axis[0]] = axis[1] * self.speed
            self._ticks_left = self.hold_ticks
        return None

    def tick(self) -> np.ndarray:
        """The command for this control tick (motion stops when keys stop arriving)."""
        command = self._command.copy() if self._ticks_left > 0 else np.zeros(self.command_dim)
        self._ticks_left = max(0, self._ticks_left - 1)
        if self.gripper_index is not None:
            command[self.gripper_index] = self._gripper
        return command


@dataclass
class AxisMap:
    """A gamepad or SpaceMouse: evdev absolute axes -> command elements, buttons -> events."""

    command_dim: int
    axes: dict[int, tuple[int, float]]  # evdev ABS code -> (command index, sign)
    buttons: dict[int, str]  # evdev KEY/BTN code -> recorder event word, or "gripper"
    gripper_index: int | None = None
    deadzone: float = 0.1  # fraction of full scale ignored around center
    recording: bool = False
    _values: dict[int, float] = field(default_factory=dict)
    _gripper: float = -1.0

    def axis(self, code: int, value: int, minimum: int, maximum: int) -> None:
        """Record an absolute axis reading (raw device units)."""
        center, half = (maximum + minimum) / 2.0, (maximum - minimum) / 2.0
        normalized = (value - center) / half if half else 0.0
        self._values[code] = 0.0 if abs(normalized) < self.deadzone else float(np.clip(normalized, -1, 1))

    def button(self, code: int, pressed: bool) -> str | None:
        action = self.buttons.get(code)
        if not pressed or action is None:
            return None
        if action == "gripper":
            self._gripper = -self._gripper
            return None
        if action == START:
            self.recording = not self.recording
            return START if self.recording else STOP
        self.recording = False
        return action

    def command(self) -> np.ndarray:
        command = np.zeros(self.command_dim)
        for code, value in self._values.items():
            if code in self.axes:
                index, sign = self.axes[code]
                if index < self.command_dim:
                    command[index] = sign * value
        if self.gripper_index is not None:
            command[self.gripper_index] = self._gripper
        return command


def gamepad_map(command_dim: int, gripper_index: int | None) -> AxisMap:
    """An Xbox-style pad: left stick x/y, right stick z/yaw, A success, B fail, X discard, START start/stop, RB gripper."""
    abs_x, abs_y, abs_rx, abs_ry = 0x00, 0x01, 0x03, 0x04
    btn_a, btn_b, btn_x, btn_tr, btn_start = 0x130, 0x131, 0x133, 0x137, 0x13B
    return AxisMap(
        command_dim,
        axes={abs_y: (0, -1.0), abs_x: (1, -1.0), abs_ry: (2, -1.0), abs_rx: (5, -1.0)},
        buttons={btn_a: SUCCESS, btn_b: FAIL, btn_x: DISCARD, btn_start: START, btn_tr: "gripper"},
        gripper_index=gripper_index,
    )


def spacemouse_map(command_dim: int, gripper_index: int | None) -> AxisMap:
    """A 3Dconnexion SpaceMouse: 6 axes -> x, y, z, roll, pitch, yaw; left button gripper, right start/stop."""
    abs_x, abs_y, abs_z, abs_rx, abs_ry, abs_rz = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
    btn_0, btn_1 = 0x100, 0x101
    return AxisMap(
        command_dim,
        axes={abs_y: (0, -1.0), abs_x: (1, -1.0), abs_z: (2, -1.0), abs_rx: (3, 1.0), abs_ry: (4, 1.0),
              abs_rz: (5, -1.0)},
        buttons={btn_0: "gripper", btn_1: START},
        gripper_index=gripper_index,
        deadzone=0.05,
    )


class EvdevDevice:
    """A gamepad or SpaceMouse read through evdev (Linux input devices), without blocking."""

    def __init__(self, path: str, kind: str) -> None:
        from robot_stack.errors import RobotStackError

        try:
            import evdev
        except ImportError:
            raise RobotStackError("gamepad/spacemouse teleop needs the evdev package: pip install evdev") from None
        self._evdev = evdev
        paths = [path] if path else evdev.list_devices()
        for candidate in paths:
            try:
                device = evdev.InputDevice(candidate)
            except OSError as error:
                if path:
                    raise RobotStackError(f"cannot open input device {path}: {error.strerror} "
                                          "(check the path and that you may read /dev/input)") from None
                continue
            capabilities = device.capabilities()
            if evdev.ecodes.EV_ABS in capabilities and (path or _looks_like(device.name, kind)):
                self.device = device
                self.ranges = {code: (info.min, info.max) for code, info in capabilities[evdev.ecodes.EV_ABS]}
                return
        raise RobotStackError(f"no {kind} found among input devices {paths or '(none)'}: plug it in, or give "
                              "its path as the device parameter (e.g. /dev/input/event5)")

    def poll(self, axis_map: AxisMap) -> list[str]:
        """Apply every pending event to ``axis_map``; returns the recorder event words pressed."""
        words = []
        ecodes = self._evdev.ecodes
        try:
            events = list(self.device.read())
        except BlockingIOError:
            return words
        for event in events:
            if event.type == ecodes.EV_ABS and event.code in self.ranges:
                axis_map.axis(event.code, event.value, *self.ranges[event.code])
            elif event.type == ecodes.EV_KEY:
                word = axis_map.button(event.code, event.value == 1)
                if word:
                    words.append(word)
        return words


def _looks_like(name: str, kind: str) -> bool:
    name = name.lower()
    if kind == "spacemouse":
        return "spacemouse" in name or "3dconnexion" in name or "space navigator" in name
    return any(word in name for word in ("gamepad", "controller", "xbox", "joystick", "pad"))


def open_device(path: str, kind: str) -> EvdevDevice:
    return EvdevDevice(path, kind)
