"""The ROS 2 command line (``--ros-args``) and parameter files (``ros__parameters``).

Supported, as rcl does: ``-p/--param name:=value`` (value parsed as YAML),
``-r/--remap [node:]from:=to`` (``__node``, ``__ns`` and ``__name`` included),
``--params-file FILE``, ``--log-level [logger:=]LEVEL``; other rcl flags are
accepted and ignored. Arguments outside ``--ros-args ... [--]`` are left to the
program.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_stack.errors import RosError

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
_IGNORED_WITH_VALUE = {"-e", "--enclave"}
_IGNORED_FLAGS = {
    "--disable-stdout-logs", "--enable-stdout-logs", "--disable-rosout-logs", "--enable-rosout-logs",
    "--disable-external-lib-logs", "--enable-external-lib-logs",
}


@dataclass
class RosArguments:
    """What ``--ros-args`` sections of a command line said."""

    params: dict[str, Any] = field(default_factory=dict)  # -p name:=value, last wins
    params_files: list[Path] = field(default_factory=list)
    remaps: list[tuple[str | None, str, str]] = field(default_factory=list)  # (node or None, from, to)
    log_level: str | None = None
    remaining: list[str] = field(default_factory=list)  # the program's own arguments

    def node_name(self, default: str) -> str:
        return self._special("__node", default) or self._special("__name", default) or default

    def namespace(self, default: str | None) -> str | None:
        return self._special("__ns", default) or default

    def _special(self, key: str, node: str | None) -> str | None:
        for rule_node, source, target in self.remaps:
            if source == key and (rule_node is None or rule_node == node):
                return target
        return None

    def topic_remaps(self, node_name: str) -> list[tuple[str, str]]:
        return [
            (source, target)
            for rule_node, source, target in self.remaps
            if not source.startswith("__") and (rule_node is None or rule_node == node_name)
        ]


def parse_value(text: str) -> Any:
    """A parameter value from the command line, typed as YAML (``10`` int, ``1.5`` float, ``[a, b]`` list)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_arguments(argv: list[str]) -> RosArguments:
    """Split a command line into ROS arguments and the program's own."""
    result = RosArguments()
    i, in_ros = 0, False
    while i < len(argv):
        arg = argv[i]
        if arg == "--ros-args":
            in_ros = True
        elif in_ros and arg == "--":
            in_ros = False
        elif not in_ros:
            result.remaining.append(arg)
        elif arg in ("-p", "--param", "-r", "--remap", "--params-file", "--log-level") or arg in _IGNORED_WITH_VALUE:
            if i + 1 >= len(argv):
                raise RosError(f"--ros-args: '{arg}' needs a value")
            i += 1
            _apply(result, arg, argv[i])
        elif arg in _IGNORED_FLAGS:
            pass
        else:
            raise RosError(
                f"--ros-args: unknown argument '{arg}' "
                "(use -p name:=value, -r from:=to, --params-file FILE, --log-level LEVEL; end with --)"
            )
        i += 1
    return result


def _apply(result: RosArguments, flag: str, value: str) -> None:
    if flag in ("-p", "--param"):
        name, sep, text = value.partition(":=")
        if not sep or not name:
            raise RosError(f"--ros-args -p expects name:=value, got '{value}'")
        result.params[name] = parse_value(text)
    elif flag in ("-r", "--remap"):
        rule, sep, target = value.partition(":=")
        if not sep or not rule or not target:
            raise RosError(f"--ros-args -r expects from:=to, got '{value}'")
        node, colon, source = rule.rpartition(":")
        result.remaps.append((node if colon else None, source, target))
    elif flag == "--params-file":
        path = Path(value)
        if not path.is_file():
            raise RosError(f"params file '{value}' not found (--params-file): check the path")
        result.params_files.append(path)
    elif flag == "--log-level":
        _, _, level = value.rpartition(":=")
        level = level.lower()
        if level == "warning":
            level = "warn"
        if level not in LOG_LEVELS:
            raise RosError(f"--log-level '{value}': use one of {', '.join(LOG_LEVELS)}")
        result.log_level = level


def load_params_file(path: Path, node_fqn: str) -> dict[str, Any]:
    """Parameters a ROS 2 params file gives the node ``node_fqn`` ('/ns/name').

    Keys may be ``/**`` (every node), a wildcard (``/**/name``), the node's full
    name, its bare name, or nested namespaces; later, more specific keys win.
    Nested mappings under ``ros__parameters`` become dotted names.
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise RosError(f"cannot read params file '{path}': {error.strerror}") from None
    except yaml.YAMLError as error:
        raise RosError(f"params file '{path}' is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise RosError(f"params file '{path}' must map node names to {{ros__parameters: ...}}")
    matches: list[tuple[int, dict[str, Any]]] = []
    _collect(document, "", node_fqn, matches, path)
    params: dict[str, Any] = {}
    for _, values in sorted(matches, key=lambda m: m[0]):
        params.update(values)
    return params


def _collect(tree: dict, prefix: str, node_fqn: str, out: list, path: Path) -> None:
    for key, value in tree.items():
        if not isinstance(value, dict):
            raise RosError(f"params file '{path}': '{prefix}/{key}' must be a mapping (ROS 2 layout: node: ros__parameters: ...)")
        if key == "ros__parameters":
            pattern = prefix or "/**"
            if _name_matches(pattern, node_fqn):
                specificity = 0 if "*" in pattern else 2 if pattern.startswith("/") else 1
                out.append((specificity, _flatten(value)))
            continue
        name = str(key)
        joined = name if name.startswith("/") else f"{prefix}/{name}" if prefix else name
        _collect(value, joined, node_fqn, out, path)


def _name_matches(pattern: str, node_fqn: str) -> bool:
    if pattern == "/**":
        return True
    if not pattern.startswith("/"):
        return node_fqn.rsplit("/", 1)[-1] == pattern or node_fqn == "/" + pattern
    if "*" in pattern:
        regexish = pattern.replace("/**", "/*")
        return fnmatch.fnmatchcase(node_fqn, regexish) or fnmatch.fnmatchcase(node_fqn, pattern)
    return pattern == node_fqn


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
