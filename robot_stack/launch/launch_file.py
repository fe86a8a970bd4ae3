"""Read a ROS 2 YAML launch file into the nodes it starts, with every substitution resolved.

The accepted syntax is the ``launch_ros`` YAML frontend, so the same file runs under ``ros2 launch``:

    launch:
    - arg: {name: duration, default: '10', description: 'run time [s]'}
    - let: {name: topic, value: joint_states}
    - include: {file: $(dirname)/other.launch.yaml, arg: [{name: x, value: '1'}]}
    - group: {scoped: true, children: [{push-ros-namespace: {namespace: arm}}, ...]}
    - node:
        pkg: robot_stack
        exec: demo_arm
        name: demo_arm
        namespace: robot
        param: [{name: rate_hz, value: 100}, {from: $(find-pkg-share robot_stack)/launch/params/demo.yaml}]
        remap: [{from: joint_states, to: /arm/joint_states}]
        args: --verbose
        output: screen
        on_exit: shutdown
        if: $(var use_arm)

Entries are evaluated in order, like ``ros2 launch`` does: an ``arg`` takes the command-line value or
its default, ``let`` sets a value, an ``include`` shares the includer's values, a scoped ``group``
(the default) forgets what was set inside it. ``if``/``unless`` take true/false/1/0 in any case, so a
test can be written in place: ``unless: $(equals $(var teleop) none)``, ``if: $(eval '$(var n) > 2')``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_stack.errors import LaunchError
from robot_stack.launch.package import executable_command
from robot_stack.launch.substitution import (
    SubstitutionContext,
    has_substitutions,
    parse_template,
    split_command_line,
    substitute,
)

# The launch configuration push-ros-namespace sets, named as in launch_ros.
ROS_NAMESPACE = "ros_namespace"
OUTPUT_MODES = ("screen", "log", "both")
_CONDITION_KEYS = ("if", "unless")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER_TYPES = (
    "str", "int", "float", "bool", "list_of_str", "list_of_int", "list_of_float", "list_of_bool", "yaml",
)
# Node keys ros2 launch knows that this runner does not implement: named as such in errors.
_ROS_ONLY_NODE_KEYS = (
    "launch-prefix", "respawn", "respawn_delay", "respawn_max_retries", "cwd", "shell", "emulate_tty", "node-name",
)

ParameterValue = str | int | float | bool | list


@dataclass(frozen=True)
class LaunchArgument:
    """An ``arg`` entry: ``default`` as written in the file (None: required)."""

    name: str
    default: str | None
    description: str
    choices: tuple[str, ...]
    launch_file: Path


@dataclass
class NodeLaunch:
    """One node process to start, fully resolved.

    ``parameters`` keeps the file's order: a dict is inline parameters (flat dotted names),
    a Path a parameters file; later entries override earlier ones, as with ROS 2.
    Timeouts are seconds; None means the runner's default.
    """

    package: str | None
    executable: str
    command: list[str]
    label: str
    name: str | None = None
    namespace: str | None = None
    parameters: list[dict[str, ParameterValue] | Path] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    ros_arguments: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    output: str = "log"
    shutdown_on_exit: bool = False
    sigterm_timeout: float | None = None
    sigkill_timeout: float | None = None
    origin: str = ""

    @property
    def parameter_key(self) -> str:
        """Node key of its inline-parameters file: the full node name when known, else the wildcard."""
        if self.name is not None and self.namespace is not None:
            return f"{self.namespace.rstrip('/')}/{self.name}"
        return "/**"

    def argv(self, params_dir: Path, label: str) -> list[str]:
        """The process command line; writes inline parameters to YAML files under ``params_dir``.

        Same layout as ``ros2 launch``: ``exec [args] [--ros-args ros_args] --ros-args -r __node:=
        -r __ns:= --params-file ... -r from:=to``.
        """
        argv = [*self.command, *self.arguments]
        if self.ros_arguments:
            argv += ["--ros-args", *self.ros_arguments]
        ros_specific: list[str] = []
        if self.name is not None:
            ros_specific += ["-r", f"__node:={self.name}"]
        if self.namespace is not None:
            ros_specific += ["-r", f"__ns:={self.namespace}"]
        for index, parameters in enumerate(self.parameters):
            if isinstance(parameters, Path):
                ros_specific += ["--params-file", str(parameters)]
                continue
            path = params_dir / f"{label}_params_{index}.yaml"
            document = {self.parameter_key: {"ros__parameters": parameters}}
            path.write_text(yaml.safe_dump(document, default_flow_style=False, sort_keys=False))
            ros_specific += ["--params-file", str(path)]
        for source, target in self.remappings:
            ros_specific += ["-r", f"{source}:={target}"]
        if ros_specific:
            argv += ["--ros-args", *ros_specific]
        return argv


@dataclass
class LaunchPlan:
    """What a launch file starts: its declared arguments and its nodes in start order."""

    launch_file: Path
    arguments: list[LaunchArgument]
    nodes: list[NodeLaunch]
    configurations: dict[str, str]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _join_namespace(base: str | None, namespace: str | None) -> str | None:
    """launch_ros's prefix-then-make-absolute: a relative namespace goes under ``base``."""
    if namespace is None:
        combined = base
    elif not base or namespace.startswith("/"):
        combined = namespace
    else:
        combined = ("" if base == "/" else base.rstrip("/")) + "/" + namespace
    if combined is None:
        return None
    combined = "/" + combined.strip("/")
    return combined


def _check_namespace(namespace: str) -> None:
    tokens = namespace.strip("/").split("/") if namespace != "/" else []
    if any(not _NAME.fullmatch(token) for token in tokens):
        raise LaunchError(
            f"invalid namespace '{namespace}': tokens are letters, digits and '_' and do not start with a digit"
        )


class _Evaluator:
    """Walks a launch file in order, as ``ros2 launch`` executes it.

    ``show_only`` is the ``--show-args`` walk: it visits every entry whatever its condition,
    tolerates values it cannot resolve and starts no node, only collecting ``arg`` entries.
    """

    def __init__(self, cli_arguments: dict[str, str], show_only: bool) -> None:
        self.configurations: dict[str, str] = dict(cli_arguments)
        self.show_only = show_only
        self.arguments: dict[str, LaunchArgument] = {}
        self.nodes: list[NodeLaunch] = []
        self.file_stack: list[Path] = []
        self.entries: dict[str, tuple[Callable[[Any, str], None], tuple[str, ...]]] = {
            "arg": (self.arg, ("name", "default", "description", "choice")),
            "let": (self.let, ("name", "value")),
            "node": (self.node, (
                "pkg", "exec", "name", "namespace", "exec_name", "param", "remap", "args", "ros_args", "env",
                "output", "on_exit", "sigterm_timeout", "sigkill_timeout",
            )),
            "include": (self.include, ("file", "arg")),
            "group": (self.group, ("scoped", "forwarding", "keep", "children")),
            "push-ros-namespace": (self.push_ros_namespace, ("namespace",)),
            "push_ros_namespace": (self.push_ros_namespace, ("namespace",)),
        }

    # ---- reading values -------------------------------------------------------------------------

    @property
    def launch_file(self) -> Path:
        return self.file_stack[-1]

    def fail(self, where: str, message: str) -> LaunchError:
        return LaunchError(f"{_display(self.launch_file)}: {where}: {message}")

    def context(self) -> SubstitutionContext:
        return SubstitutionContext(self.configurations, self.launch_file)

    def substitute(self, raw: str, where: str) -> str:
        try:
            return substitute(raw, self.context())
        except LaunchError as error:
            raise self.fail(where, str(error)) from None

    def string(self, body: dict, key: str, where: str, *, required: bool = False) -> str | None:
        """A string attribute as written (before substitution); YAML launch files reject non-strings."""
        if key not in body:
            if required:
                raise self.fail(where, f"missing required key '{key}'")
            return None
        value = body[key]
        if not isinstance(value, str):
            written = str(value).lower() if isinstance(value, bool) else value
            raise self.fail(
                where, f"'{key}' must be a string, got {value!r} (quote it: '{written}'; ros2 launch rejects it too)"
            )
        return value

    def resolved(self, body: dict, key: str, where: str, *, required: bool = False) -> str | None:
        raw = self.string(body, key, where, required=required)
        return None if raw is None else self.substitute(raw, f"{where}: '{key}'")

    def boolean(self, body: dict, key: str, where: str, default: bool) -> bool:
        if key not in body:
            return default
        value = body[key]
        if isinstance(value, str):
            value = self.substitute(value, f"{where}: '{key}'").strip().lower()
            if value in ("true", "1"):
                return True
            if value in ("false", "0"):
                return False
        if isinstance(value, bool):
            return value
        raise self.fail(where, f"'{key}' must be true or false, got {body[key]!r}")

    def seconds(self, body: dict, key: str, where: str) -> float | None:
        if key not in body:
            return None
        value = body[key]
        # launch_yaml accepts only a YAML float here: 5 and '5.0' fail under ros2 launch.
        if not isinstance(value, float):
            raise self.fail(
                where, f"'{key}' must be a number of seconds with a decimal point such as 5.0, got {value!r}"
            )
        if value < 0:
            raise self.fail(where, f"'{key}' must not be negative, got {value}")
        return value

    def entity_list(self, body: dict, key: str, where: str) -> list[dict]:
        """A list-of-mappings attribute (param, remap, arg, env, keep, choice)."""
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(where, f"'{key}' must be a list of mappings (- name: ... lines), got {value!r}")
        return value

    def check_keys(self, body: dict, where: str, allowed: tuple[str, ...]) -> None:
        for key in body:
            if key in allowed:
                continue
            if key in _ROS_ONLY_NODE_KEYS and "exec" in allowed:
                raise self.fail(
                    where, f"'{key}' is not supported by robot-stack launch (use ros2 launch); "
                    f"supported: {', '.join(allowed)}"
                )
            raise self.fail(where, f"unknown key '{key}'; allowed: {', '.join(allowed)}")

    def condition_holds(self, body: dict, where: str) -> bool:
        if "if" in body and "unless" in body:
            raise self.fail(where, "'if' and 'unless' cannot be used together")
        if self.show_only:
            return True
        for key, expected in (("if", True), ("unless", False)):
            raw = self.string(body, key, where)
            if raw is None:
                continue
            value = self.substitute(raw, f"{where}: '{key}'").strip().lower()
            if value in ("true", "1"):
                return expected
            if value in ("false", "0"):
                return not expected
            raise self.fail(where, f"condition '{key}' is {value!r}; it must be true, false, 1 or 0")
        return True

    # ---- files and entries ----------------------------------------------------------------------

    def run_file(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved in self.file_stack:
            chain = " -> ".join(_display(p) for p in [*self.file_stack, resolved])
            raise LaunchError(f"launch files include each other in a cycle: {chain}")
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise LaunchError(f"launch file not found: {path}") from None
        except OSError as error:
            raise LaunchError(f"cannot read launch file {path}: {error.strerror}") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise LaunchError(f"{_display(path)}: not valid YAML{at}: {problem}") from None
        if not isinstance(document, dict) or list(document) != ["launch"] or not isinstance(document["launch"], list):
            raise LaunchError(
                f"{_display(path)}: a YAML launch file is one top-level key `launch:` holding a list of entries"
            )
        self.file_stack.append(resolved)
        try:
            self.run_entries(document["launch"], "launch")
        finally:
            self.file_stack.pop()

    def run_entries(self, entries: list, trail: str) -> None:
        for index, entry in enumerate(entries):
            where = f"{trail}[{index}]"
            if not isinstance(entry, dict) or len(entry) != 1:
                raise self.fail(
                    where, f"an entry is a mapping with one key, its type ({', '.join(self.entries)}); got {entry!r}"
                )
            (kind, body), = entry.items()
            if kind not in self.entries:
                raise self.fail(where, f"unknown entry '{kind}'; allowed: {', '.join(self.entries)}")
            handler, keys = self.entries[kind]
            where = f"{where} ({kind})"
            if isinstance(body, dict):
                self.check_keys(body, where, (*keys, *_CONDITION_KEYS))
                if not self.condition_holds(body, where):
                    continue
            elif not (kind == "include" and isinstance(body, str)) and not (kind == "group" and isinstance(body, list)):
                raise self.fail(where, f"'{kind}' must hold a mapping of keys ({', '.join(keys)}), got {body!r}")
            handler(body, where)

    def arg(self, body: dict, where: str) -> None:
        name = self.string(body, "name", where, required=True)
        default = self.string(body, "default", where)
        description = self.string(body, "description", where) or ""
        choices = []
        for choice in self.entity_list(body, "choice", where):
            self.check_keys(choice, f"{where}: choice", ("value",))
            choices.append(self.string(choice, "value", f"{where}: choice", required=True))
        argument = LaunchArgument(name, default, description, tuple(choices), self.launch_file)
        self.arguments.setdefault(name, argument)
        if name not in self.configurations:
            if default is None:
                if self.show_only:
                    return
                raise self.fail(
                    where, f"launch argument '{name}' is required (it has no default): pass {name}:=VALUE"
                )
            if self.show_only:
                try:
                    self.configurations[name] = substitute(default, self.context())
                except LaunchError:
                    pass
                return
            self.configurations[name] = self.substitute(default, f"{where}: 'default'")
        if choices and not self.show_only and self.configurations[name] not in choices:
            raise self.fail(
                where, f"launch argument '{name}' is {self.configurations[name]!r}; choose one of: {', '.join(choices)}"
            )

    def let(self, body: dict, where: str) -> None:
        if self.show_only:
            try:
                name, value = substitute(body["name"], self.context()), substitute(body["value"], self.context())
            except (LaunchError, KeyError, TypeError):
                return
            self.configurations[name] = value
            return
        name = self.resolved(body, "name", where, required=True)
        self.configurations[name] = self.resolved(body, "value", where, required=True)

    def include(self, body: dict | str, where: str) -> None:
        if isinstance(body, str):
            body = {"file": body}
        arguments = self.entity_list(body, "arg", where)
        for argument in arguments:
            self.check_keys(argument, f"{where}: arg", ("name", "value"))
        if self.show_only:
            try:
                path = Path(substitute(self.string(body, "file", where, required=True), self.context()))
                for argument in arguments:
                    self.configurations[substitute(argument["name"], self.context())] = substitute(
                        argument["value"], self.context()
                    )
            except (LaunchError, KeyError, TypeError):
                return  # best effort, as `ros2 launch --show-args` does for includes it cannot resolve
            if path.is_file():
                self.run_file(path)
            return
        path = Path(self.resolved(body, "file", where, required=True))
        if not path.is_file():
            raise self.fail(
                where, f"included file not found: {path} (a relative path is relative to the working directory, "
                "as in ros2 launch; write $(dirname)/NAME for a file beside this one)"
            )
        for argument in arguments:
            name = self.resolved(argument, "name", f"{where}: arg", required=True)
            self.configurations[name] = self.resolved(argument, "value", f"{where}: arg '{name}'", required=True)
        self.run_file(path)

    def group(self, body: dict | list, where: str) -> None:
        if isinstance(body, list):
            body = {"children": body}
        children = body.get("children")
        if not isinstance(children, list):
            raise self.fail(where, "a group needs 'children:', a list of entries")
        scoped = self.boolean(body, "scoped", where, default=True)
        forwarding = self.boolean(body, "forwarding", where, default=True)
        saved = dict(self.configurations)
        if scoped and not forwarding and not self.show_only:
            kept = {}
            for keep in self.entity_list(body, "keep", where):
                self.check_keys(keep, f"{where}: keep", ("name", "value"))
                name = self.resolved(keep, "name", f"{where}: keep", required=True)
                kept[name] = self.resolved(keep, "value", f"{where}: keep '{name}'", required=True)
            self.configurations.clear()
            self.configurations.update(kept)
        try:
            self.run_entries(children, f"{where}: children")
        finally:
            if scoped:
                # Values set inside a scoped group vanish with it, ros_namespace included.
                self.configurations.clear()
                self.configurations.update(saved)

    def push_ros_namespace(self, body: dict, where: str) -> None:
        if self.show_only:
            return
        pushed = self.resolved(body, "namespace", where, required=True)
        namespace = _join_namespace(self.configurations.get(ROS_NAMESPACE), pushed)
        try:
            _check_namespace(namespace)
        except LaunchError as error:
            raise self.fail(where, str(error)) from None
        self.configurations[ROS_NAMESPACE] = namespace

    def node(self, body: dict, where: str) -> None:
        if self.show_only:
            return
        package = self.resolved(body, "pkg", where)
        executable = self.resolved(body, "exec", where, required=True)
        name = self.resolved(body, "name", where)
        where = f"{where} '{name or executable}'"
        if name is not None and not _NAME.fullmatch(name):
            raise self.fail(where, f"invalid node name '{name}': letters, digits and '_', not starting with a digit")
        namespace = _join_namespace(self.configurations.get(ROS_NAMESPACE), self.resolved(body, "namespace", where))
        if namespace is not None:
            try:
                _check_namespace(namespace)
            except LaunchError as error:
                raise self.fail(where, str(error)) from None
        try:
            command = executable_command(package, executable)
        except LaunchError as error:
            raise self.fail(where, str(error)) from None
        output = self.resolved(body, "output", where) or "log"
        if output not in OUTPUT_MODES:
            raise self.fail(where, f"'output' is {output!r}; choose one of: {', '.join(OUTPUT_MODES)}")
        on_exit = self.resolved(body, "on_exit", where)
        if on_exit not in (None, "shutdown"):
            raise self.fail(where, f"'on_exit' is {on_exit!r}; only 'shutdown' is supported (as in ros2 launch)")
        remappings = []
        for remap in self.entity_list(body, "remap", where):
            self.check_keys(remap, f"{where}: remap", ("from", "to"))
            remappings.append((
                self.resolved(remap, "from", f"{where}: remap", required=True),
                self.resolved(remap, "to", f"{where}: remap", required=True),
            ))
        env = {}
        for variable in self.entity_list(body, "env", where):
            self.check_keys(variable, f"{where}: env", ("name", "value"))
            env[self.resolved(variable, "name", f"{where}: env", required=True)] = self.resolved(
                variable, "value", f"{where}: env", required=True
            )
        arguments = self.command_line(body, "args", where)
        ros_arguments = self.command_line(body, "ros_args", where)
        self.nodes.append(NodeLaunch(
            package=package,
            executable=executable,
            command=command,
            label=self.resolved(body, "exec_name", where) or os.path.basename(executable),
            name=name,
            namespace=namespace,
            parameters=self.parameters(self.entity_list(body, "param", where), f"{where}: param"),
            remappings=remappings,
            arguments=arguments,
            ros_arguments=ros_arguments,
            env=env,
            output=output,
            shutdown_on_exit=on_exit == "shutdown",
            sigterm_timeout=self.seconds(body, "sigterm_timeout", where),
            sigkill_timeout=self.seconds(body, "sigkill_timeout", where),
            origin=f"{_display(self.launch_file)}: {where}",
        ))

    def command_line(self, body: dict, key: str, where: str) -> list[str]:
        raw = self.string(body, key, where)
        if raw is None:
            return []
        try:
            return split_command_line(raw, self.context())
        except LaunchError as error:
            raise self.fail(f"{where}: '{key}'", str(error)) from None

    # ---- parameters -----------------------------------------------------------------------------

    def parameters(self, items: list[dict], where: str) -> list[dict[str, ParameterValue] | Path]:
        """Inline parameters (consecutive ones merged into one dict) and parameter files, in order."""
        result: list[dict[str, ParameterValue] | Path] = []
        inline: dict[str, ParameterValue] = {}
        for index, item in enumerate(items):
            item_where = f"{where}[{index}]"
            if "from" in item:
                self.check_keys(item, item_where, ("from",))
                raw = self.string(item, "from", item_where)
                path = Path(self.substitute(raw, f"{item_where}: 'from'"))
                if not path.is_file():
                    raise self.fail(
                        item_where, f"parameters file not found: {path} (from: {raw}); a relative path is relative "
                        "to the working directory: write $(dirname)/NAME or $(find-pkg-share robot_stack)/..."
                    )
                if inline:
                    result.append(inline)
                    inline = {}
                result.append(path.resolve())
            elif "name" in item:
                inline.update(self.named_parameter(item, "", item_where))
            else:
                raise self.fail(item_where, "a param entry needs 'name' (with 'value' or nested 'param') or 'from'")
        if inline:
            result.append(inline)
        return result

    def named_parameter(self, item: dict, prefix: str, where: str) -> dict[str, ParameterValue]:
        self.check_keys(item, where, ("name", "value", "type", "param"))
        name = prefix + self.resolved(item, "name", where, required=True)
        where = f"{where} '{name}'"
        if "param" in item:
            if "value" in item or "type" in item:
                raise self.fail(where, "nested 'param' cannot be combined with 'value' or 'type'")
            nested: dict[str, ParameterValue] = {}
            for index, child in enumerate(self.entity_list(item, "param", where)):
                nested.update(self.named_parameter(child, f"{name}.", f"{where}: param[{index}]"))
            return nested
        if "value" not in item:
            raise self.fail(where, "a parameter needs 'value' (or nested 'param' entries)")
        type_name = self.string(item, "type", where)
        if type_name is not None and type_name not in _PARAMETER_TYPES:
            raise self.fail(where, f"unknown parameter type '{type_name}'; allowed: {', '.join(_PARAMETER_TYPES)}")
        try:
            return {name: self.parameter_value(item["value"], type_name)}
        except LaunchError as error:
            raise self.fail(where, str(error)) from None

    def parameter_value(self, value: Any, type_name: str | None) -> ParameterValue:
        """launch_ros's rules: YAML values keep their type; a string with substitutions is read as YAML;
        ``type`` coerces a substituted string (``type: float`` makes '3' 3.0) and checks a YAML value."""
        if type_name == "yaml":
            type_name = None
        is_list_type = type_name is not None and type_name.startswith("list_of_")
        if isinstance(value, list):
            if type_name is not None and not is_list_type:
                raise LaunchError(f"a list value needs a list_of_* type, not '{type_name}'")
            if not value:
                raise LaunchError("an empty list has no parameter type; give at least one item")
            item_type = type_name[len("list_of_"):] if is_list_type else None
            items = [self.list_item(item, item_type) for item in value]
            if len({type(item) for item in items}) != 1:
                raise LaunchError(f"list items must all have one type (bool, int, float or str), got {value!r}")
            return items
        if isinstance(value, str):
            text = substitute(value, self.context())
            if type_name is not None:
                return _coerce(text, type_name)
            return _yaml_value(text) if has_substitutions(parse_template(value)) else text
        if is_list_type:
            raise LaunchError(f"type '{type_name}' needs a list value, got {value!r}")
        _check_yaml_type(value, type_name)
        return value

    def list_item(self, item: Any, type_name: str | None) -> bool | int | float | str:
        if isinstance(item, str):
            text = substitute(item, self.context())
            if type_name is not None:
                return _coerce(text, type_name)
            if not has_substitutions(parse_template(item)):
                return text
            value = _yaml_value(text)
            if isinstance(value, list):
                raise LaunchError(f"list item {text!r} is itself a list")
            return value
        _check_yaml_type(item, type_name)
        return item


_SCALAR_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _check_yaml_type(value: Any, type_name: str | None) -> None:
    """A value written as YAML must already have the declared type, as launch_yaml checks (5.0, not 5)."""
    expected = _SCALAR_TYPES.get(type_name or "") or (bool, int, float, str)
    if not isinstance(value, expected) or (type_name in ("int", "float") and isinstance(value, bool)):
        raise LaunchError(f"{value!r} is not a parameter value of type {type_name or 'bool, int, float or str'}")


def _yaml_value(text: str) -> bool | int | float | str | list:
    """A substituted value read as YAML; a scalar or a list of one scalar type."""
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise LaunchError(f"{text!r} is not valid YAML; give 'type: str' for a string value") from None
    if isinstance(value, list) and value and isinstance(value[0], (bool, int, float, str)) \
            and len({type(item) for item in value}) == 1:
        return value
    if not isinstance(value, (bool, int, float, str)):
        raise LaunchError(
            f"{text!r} is not a parameter value (bool, int, float, str or a list of one of them); "
            "give 'type: str' for a string"
        )
    return value


def _coerce(text: str, type_name: str) -> ParameterValue:
    """A substituted string to the declared type, like launch's coerce_to_type."""
    try:
        if type_name == "str":
            return text
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        if type_name == "bool":
            value = yaml.safe_load({"1": "true", "0": "false"}.get(text, text))
            if isinstance(value, bool):
                return value
        else:
            item_type = _SCALAR_TYPES[type_name[len("list_of_"):]]
            value = yaml.safe_load(text)
            if isinstance(value, list) and all(
                isinstance(item, item_type) and (item_type is bool or not isinstance(item, bool)) for item in value
            ):
                return value
    except (ValueError, yaml.YAMLError):
        pass
    raise LaunchError(f"{text!r} is not of type {type_name}")


def _check_cli_arguments(cli_arguments: dict[str, str]) -> None:
    for name in cli_arguments:
        if not name:
            raise LaunchError("launch arguments are NAME:=VALUE with a non-empty NAME")


def declared_arguments(path: Path, cli_arguments: dict[str, str] | None = None) -> list[LaunchArgument]:
    """Every ``arg`` the file and the files it includes declare, whatever their conditions.

    ``cli_arguments`` help resolve include paths that depend on them; nothing is started.
    """
    evaluator = _Evaluator(dict(cli_arguments or {}), show_only=True)
    evaluator.file_stack = []
    evaluator.run_file(Path(path))
    return list(evaluator.arguments.values())


def load_launch(path: Path, cli_arguments: dict[str, str] | None = None) -> LaunchPlan:
    """Evaluate the launch file with ``name:=value`` arguments into the nodes to start.

    Raises LaunchError for a missing or malformed file, an argument the file does not declare,
    a required argument not given, a bad substitution, a missing parameters file or an unknown
    executable: all before any process starts.
    """
    path = Path(path)
    cli_arguments = dict(cli_arguments or {})
    _check_cli_arguments(cli_arguments)
    declared = declared_arguments(path, cli_arguments)
    unknown = [name for name in cli_arguments if name not in {argument.name for argument in declared}]
    if unknown:
        listed = ", ".join(argument.name for argument in declared) or "none"
        raise LaunchError(
            f"unknown launch argument(s) {', '.join(repr(name) for name in unknown)} for {_display(path)}; "
            f"declared: {listed} (see --show-args)"
        )
    evaluator = _Evaluator(cli_arguments, show_only=False)
    evaluator.run_file(path)
    return LaunchPlan(path, list(evaluator.arguments.values()), evaluator.nodes, evaluator.configurations)
