"""Launch substitutions: ``$(var x)``, ``$(env X [default])``, ``$(find-pkg-share pkg)``, ``$(dirname)``,
``$(equals a b)``, ``$(eval 'python expression')``...

The syntax follows the ROS 2 launch frontend grammar: a value is text with substitutions in it;
arguments are separated by one space and may be quoted ('...' or "..."); substitutions nest
(``$(var $(var which))``); a backslash escapes the next character (``\\$(`` is literal text).
"""

from __future__ import annotations

import ast
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from robot_stack.errors import LaunchError
from robot_stack.launch.package import package_share_directory


@dataclass(frozen=True)
class Text:
    """Literal text, escapes already removed."""

    text: str


@dataclass(frozen=True)
class Substitution:
    """``$(name arg arg ...)``; each argument is itself a template."""

    name: str
    args: tuple[tuple[Text | Substitution, ...], ...]


Template = tuple[Text | Substitution, ...]


@dataclass
class SubstitutionContext:
    """What substitutions read: launch configurations (args and lets) and the current launch file."""

    configurations: Mapping[str, str]
    launch_file: Path
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def _var(context: SubstitutionContext, args: list[str]) -> str:
    name = args[0]
    if name in context.configurations:
        return context.configurations[name]
    if len(args) == 2:
        return args[1]
    raise LaunchError(
        f"launch configuration '{name}' is not set: declare it with `arg` or `let` before using $(var {name})"
    )


def _env(context: SubstitutionContext, args: list[str]) -> str:
    if args[0] in context.environ:
        return context.environ[args[0]]
    if len(args) == 2:
        return args[1]
    raise LaunchError(f"environment variable '{args[0]}' is not set (give a default: $(env {args[0]} DEFAULT))")


def _find_pkg_share(context: SubstitutionContext, args: list[str]) -> str:
    return str(package_share_directory(args[0]))


def _dirname(context: SubstitutionContext, args: list[str]) -> str:
    return str(context.launch_file.parent)


def _filename(context: SubstitutionContext, args: list[str]) -> str:
    return str(context.launch_file)


def _is_bool(text: str) -> bool:
    return text.lower() in ("true", "false", "1", "0")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _equals(context: SubstitutionContext, args: list[str]) -> str:
    """'true' or 'false', as launch's EqualsSubstitution: two booleans (true/false/1/0, any case) compare as
    booleans, two numbers as floats (math.isclose: '1.0' equals '1'), anything else as text."""
    left, right = args
    if _is_bool(left) and _is_bool(right):
        same = (left.lower() in ("true", "1")) == (right.lower() in ("true", "1"))
    elif _is_float(left) and _is_float(right):
        same = math.isclose(float(left), float(right))
    else:
        same = left == right
    return "true" if same else "false"


# What an $(eval) expression may use: math's names (bare, as launch allows, and as math.x) and a few
# value builtins. Not the other builtins (no __import__, open, exec...): a launch file cannot reach the system.
_EVAL_NAMES: dict[str, object] = {
    **{name: getattr(math, name) for name in dir(math) if not name.startswith("_")},
    "math": math,
    **{f.__name__: f for f in (abs, all, any, bool, float, int, len, max, min, round, str, sum)},
}


def _eval(context: SubstitutionContext, args: list[str]) -> str:
    """str() of a Python expression (substitutions already expanded), as launch's PythonExpression: a
    comparison gives 'True' or 'False'. Only the math module may be named as the second argument."""
    expression = args[0]
    modules = [name.strip() for name in args[1].split(",") if name.strip()] if len(args) == 2 else ["math"]
    others = [name for name in modules if name != "math"]
    if others:
        raise LaunchError(f"$(eval {expression!r}): robot-stack launch offers the math module only, not "
                          f"{', '.join(others)}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise LaunchError(f"$(eval) cannot read {expression!r} as a Python expression: {error.msg}") from None
    for node in ast.walk(tree):
        # Underscore names are the way out of a restricted namespace (().__class__.__subclasses__()...).
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if name.startswith("_"):
            raise LaunchError(f"$(eval {expression!r}): names starting with '_' ({name}) are not allowed")
    try:
        value = eval(compile(tree, "<launch $(eval)>", "eval"), {"__builtins__": {}}, dict(_EVAL_NAMES))
    except Exception as error:  # the expression is the user's: any failure is theirs to fix, said in one line
        hint = " (names it may use: math's functions and constants, abs, all, any, bool, float, int, len, max, " \
               "min, round, str, sum; quote text: '$(var name)')" if isinstance(error, NameError) else ""
        raise LaunchError(f"$(eval {expression!r}) failed: {type(error).__name__}: {error}{hint}") from None
    return str(value)


# name -> (implementation, min args, max args): the subset of ros2 launch's substitutions implemented here.
SUBSTITUTIONS: dict[str, tuple[Callable[[SubstitutionContext, list[str]], str], int, int]] = {
    "var": (_var, 1, 2),
    "env": (_env, 1, 2),
    "find-pkg-share": (_find_pkg_share, 1, 1),
    "dirname": (_dirname, 0, 0),
    "filename": (_filename, 0, 0),
    "equals": (_equals, 2, 2),
    "eval": (_eval, 1, 2),
}

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class _Parser:
    """Recursive descent over the frontend grammar; ``quote`` is the enclosing quote character, if any."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0

    def fail(self, what: str) -> LaunchError:
        return LaunchError(f"bad substitution syntax in {self.source!r} at character {self.pos + 1}: {what}")

    def at_substitution(self) -> bool:
        return self.source.startswith("$(", self.pos)

    def template(self) -> Template:
        parts: list[Text | Substitution] = []
        text: list[str] = []
        while self.pos < len(self.source):
            char = self.source[self.pos]
            if char == "\\" and self.pos + 1 < len(self.source):
                text.append(self.source[self.pos + 1])
                self.pos += 2
            elif self.at_substitution():
                if text:
                    parts.append(Text("".join(text)))
                    text = []
                parts.append(self.substitution(quote=None))
            else:
                text.append(char)
                self.pos += 1
        if text:
            parts.append(Text("".join(text)))
        return tuple(parts)

    def substitution(self, quote: str | None) -> Substitution:
        self.pos += 2  # past "$("
        match = _IDENTIFIER.match(self.source, self.pos)
        if match is None:
            raise self.fail("expected a substitution name after '$('")
        name = match.group()
        self.pos = match.end()
        if name not in SUBSTITUTIONS:
            raise LaunchError(
                f"unknown substitution '$({name} ...)' in {self.source!r}; supported: "
                + ", ".join(f"$({known})" for known in SUBSTITUTIONS)
            )
        args: list[Template] = []
        while True:
            if self.pos >= len(self.source):
                raise self.fail(f"'$({name}' is not closed with ')'")
            char = self.source[self.pos]
            if char == ")":
                self.pos += 1
                break
            if char != " ":
                raise self.fail(f"expected ' ' or ')' in $({name} ...)")
            self.pos += 1
            args.append(self.argument(quote))
        _, least, most = SUBSTITUTIONS[name]
        if not least <= len(args) <= most:
            expected = str(least) if least == most else f"{least} or {most}"
            hint = "; quote an argument that holds spaces, e.g. $(eval '2 * $(var n)')" if len(args) > most else ""
            raise LaunchError(f"$({name}) takes {expected} argument(s), got {len(args)} in {self.source!r}{hint}")
        return Substitution(name, tuple(args))

    def argument(self, quote: str | None) -> Template:
        if quote is None and self.pos < len(self.source) and self.source[self.pos] in "'\"":
            return self.quoted(self.source[self.pos])
        parts: list[Text | Substitution] = []
        text: list[str] = []
        # An unquoted argument ends at a space, ')' or a quote; '\\' escapes any of them.
        stops = " ()'\"" if quote is None else f" (){quote}"
        while self.pos < len(self.source):
            char = self.source[self.pos]
            if char == "\\" and self.pos + 1 < len(self.source):
                text.append(self.source[self.pos + 1])
                self.pos += 2
            elif self.at_substitution():
                if text:
                    parts.append(Text("".join(text)))
                    text = []
                parts.append(self.substitution(quote))
            elif char in stops:
                break
            else:
                text.append(char)
                self.pos += 1
        if text:
            parts.append(Text("".join(text)))
        if not parts:
            raise self.fail("empty substitution argument (arguments are separated by exactly one space)")
        return tuple(parts)

    def quoted(self, quote: str) -> Template:
        self.pos += 1  # past the opening quote
        parts: list[Text | Substitution] = []
        text: list[str] = []
        while True:
            if self.pos >= len(self.source):
                raise self.fail(f"unclosed {quote} quote")
            char = self.source[self.pos]
            if char == "\\" and self.pos + 1 < len(self.source):
                text.append(self.source[self.pos + 1])
                self.pos += 2
            elif self.at_substitution():
                if text:
                    parts.append(Text("".join(text)))
                    text = []
                parts.append(self.substitution(quote))
            elif char == quote:
                self.pos += 1
                break
            else:
                text.append(char)
                self.pos += 1
        if text:
            parts.append(Text("".join(text)))
        return tuple(parts)


def parse_template(source: str) -> Template:
    """Parse a launch-file string into text and substitutions; raises LaunchError on bad syntax."""
    return _Parser(source).template()


def has_substitutions(template: Template) -> bool:
    return any(isinstance(part, Substitution) for part in template)


def evaluate(template: Template, context: SubstitutionContext) -> str:
    """The string a template stands for in ``context``."""
    pieces: list[str] = []
    for part in template:
        if isinstance(part, Text):
            pieces.append(part.text)
        else:
            implementation, _, _ = SUBSTITUTIONS[part.name]
            pieces.append(implementation(context, [evaluate(arg, context) for arg in part.args]))
    return "".join(pieces)


def substitute(source: str, context: SubstitutionContext) -> str:
    """Parse and evaluate ``source`` in one step."""
    return evaluate(parse_template(source), context)


def split_command_line(source: str, context: SubstitutionContext) -> list[str]:
    """Split a node's ``args`` string into arguments the way ``ros2 launch`` does.

    Literal text is split like a shell (quotes group words); a substitution's value is never
    split, so ``--path $(find-pkg-share robot_stack)/x y`` is three arguments whatever the path holds.
    """
    arguments: list[list[str]] = []
    current: list[str] = []

    def finish() -> None:
        nonlocal current
        if current:
            arguments.append(current)
        current = []

    for part in parse_template(source):
        if isinstance(part, Substitution):
            current.append(evaluate((part,), context))
            continue
        try:
            tokens = shlex.split(part.text)
        except ValueError as error:
            raise LaunchError(f"cannot split args {source!r}: {error}") from None
        if not tokens:
            finish()
            continue
        if part.text[0].isspace():
            finish()
        current.append(tokens[0])
        for token in tokens[1:]:
            finish()
            current.append(token)
        if part.text[-1].isspace():
            finish()
    finish()
    return ["".join(argument) for argument in arguments]
