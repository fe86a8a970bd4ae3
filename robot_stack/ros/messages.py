"""ROS 2 message classes and their CDR (XCDR1, little endian) codec.

Classes are generated once per type from the ROS 2 Jazzy definitions in the
``rosbags`` typestore, so every standard message is available by name
(``message_class("sensor_msgs/msg/JointState")``). They behave like rclpy's:
keyword construction, every field defaulted. Numeric sequences and arrays are
numpy arrays both ways (a received array is a read-only view of the received
buffer, no per-element Python work), ``uint8[]`` also accepts ``bytes`` and any
contiguous uint8 array (an HxWx3 image is flattened without a copy).

The encoder and decoder of each type are generated Python source, compiled
once; the bytes equal ``rosbags.serialize_cdr`` for the same message.
"""

from __future__ import annotations

import struct
import threading
from functools import cache
from typing import Any, Callable

import numpy as np

from robot_stack.errors import RosError

# rosbags node types of a field definition.
_BASE, _NAME, _ARRAY, _SEQUENCE = 1, 2, 3, 4

# ROS base type -> struct code, size in bytes (also its CDR alignment), numpy dtype.
_PRIMITIVES: dict[str, tuple[str, int, np.dtype]] = {
    "bool": ("?", 1, np.dtype(np.bool_)),
    "byte": ("B", 1, np.dtype(np.uint8)),
    "char": ("B", 1, np.dtype(np.uint8)),
    "int8": ("b", 1, np.dtype(np.int8)),
    "uint8": ("B", 1, np.dtype(np.uint8)),
    "int16": ("h", 2, np.dtype("<i2")),
    "uint16": ("H", 2, np.dtype("<u2")),
    "int32": ("i", 4, np.dtype("<i4")),
    "uint32": ("I", 4, np.dtype("<u4")),
    "int64": ("q", 8, np.dtype("<i8")),
    "uint64": ("Q", 8, np.dtype("<u8")),
    "float32": ("f", 4, np.dtype("<f4")),
    "float64": ("d", 8, np.dtype("<f8")),
}

CDR_HEADER = b"\x00\x01\x00\x00"  # XCDR1 (plain CDR), little endian, no options.

_ZEROS = tuple(b"\0" * n for n in range(8))
_U32 = struct.Struct("<I")


@cache
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def normalize_type_name(name: str) -> str:
    """'sensor_msgs/JointState' or 'sensor_msgs/msg/JointState' -> 'sensor_msgs/msg/JointState'."""
    if not isinstance(name, str):
        raise RosError(f"message type must be a string like 'std_msgs/msg/String', got {name!r}")
    parts = name.strip().strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    return "/".join(parts)


def known_types() -> list[str]:
    """Every message type this installation can encode (the Jazzy typestore)."""
    return sorted(_typestore().fielddefs)


class Message:
    """Base of generated message classes: keyword construction, every field defaulted."""

    __slots__ = ()
    __msgtype__: str = ""
    _fields: tuple[str, ...] = ()
    _field_types: dict[str, str] = {}
    _defaults: tuple[Callable[[], Any], ...] = ()

    def __init__(self, **fields: Any) -> None:
        for name, make_default in zip(self._fields, self._defaults):
            setattr(self, name, fields.pop(name) if name in fields else make_default())
        if fields:
            raise RosError(
                f"{self.__msgtype__} has no field {', '.join(map(repr, fields))}; "
                f"its fields are: {', '.join(self._fields) or '(none)'}"
            )

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        """Field name -> ROS type string (``float64[]``, ``std_msgs/msg/Header``), like rclpy."""
        return dict(cls._field_types)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__msgtype__.replace('/msg/', '.msg.').replace('/', '.')}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_values_equal(getattr(self, n), getattr(other, n)) for n in self._fields)

    __hash__ = None  # mutable, like rclpy messages


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    return a == b


def _type_string(node: tuple) -> str:
    kind, detail = node
    if kind == _BASE:
        name, bound = detail
        return f"{name}<={bound}" if bound else name
    if kind == _NAME:
        return detail
    inner, size = detail
    if kind == _ARRAY:
        return f"{_type_string(inner)}[{size}]"
    return f"{_type_string(inner)}[<={size}]" if size else f"{_type_string(inner)}[]"


_class_lock = threading.RLock()


def message_class(type_name: str) -> type[Message]:
    """The message class of a ROS 2 type, e.g. ``message_class('sensor_msgs/msg/Image')``."""
    return _message_class(normalize_type_name(type_name))


@cache
def _message_class(type_name: str) -> type[Message]:
    store = _typestore()
    if type_name not in store.fielddefs:
        package = type_name.split("/")[0]
        same_package = [t for t in store.fielddefs if t.startswith(package + "/")]
        hint = (
            f"types in {package}: {', '.join(sorted(same_package))}"
            if same_package
            else "run `robot-stack topic types` for the list of known types"
        )
        raise RosError(f"unknown message type '{type_name}' (not in the ROS 2 Jazzy definitions); {hint}")
    with _class_lock:
        consts, fields = store.fielddefs[type_name]
        names = tuple(name for name, _ in fields)
        namespace: dict[str, Any] = {
            "__slots__": names,
            "__msgtype__": type_name,
            "_fields": names,
            "_field_types": {name: _type_string(node) for name, node in fields},
            "_defaults": tuple(_default_factory(node) for _, node in fields),
        }
        for const_name, _const_type, value in consts:
            namespace[const_name] = value
        cls = type(type_name.rsplit("/", 1)[-1], (Message,), namespace)
        cls.__module__ = "robot_stack.ros.messages"
        return cls


def _default_factory(node: tuple) -> Callable[[], Any]:
    kind, detail = node
    if kind == _BASE:
        name = detail[0]
        if name == "string":
            return str
        if name == "bool":
            return bool
        return float if name.startswith("float") else int
    if kind == _NAME:
        return lambda: message_class(detail)()
    (inner_kind, inner_detail), size = detail
    if inner_kind == _BASE and inner_detail[0] in _PRIMITIVES:
        dtype = _PRIMITIVES[inner_detail[0]][2]
        length = size if kind == _ARRAY else 0
        return lambda: np.zeros(length, dtype)
    if kind == _ARRAY:
        element = _default_factory((inner_kind, inner_detail))
        return lambda: [element() for _ in range(size)]
    return list


# ----------------------------------------------------------------------------- codec


def _as_array(value: Any, dtype: np.dtype, field: str) -> np.ndarray:
    """A 1-D array of exactly ``dtype`` for encoding; refuses lossy conversions."""
    if type(value) is np.ndarray and value.dtype == dtype:
        return value.reshape(-1) if value.ndim != 1 else value
    if isinstance(value, (bytes, bytearray, memoryview)) and dtype.itemsize == 1 and dtype.kind != "b":
        return np.frombuffer(value, dtype)
    if isinstance(value, str):
        raise TypeError(f"field '{field}' expects a sequence of {dtype}, got str")
    array = np.asarray(value)
    if array.ndim == 0:
        raise TypeError(f"field '{field}' expects a sequence of {dtype}, got a single {type(value).__name__}")
    if array.size == 0:
        return np.zeros(0, dtype)
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and dtype.kind in "biu"):
        raise TypeError(f"field '{field}' expects a sequence of {dtype}, got {array.dtype} values")
    if dtype.kind in "iu" and array.dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(f"field '{field}' has values outside the range of {dtype}")
    return np.ascontiguousarray(array, dtype).reshape(-1)


def _check_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"expected bool, got {type(value).__name__}")


class _CodeGen:
    """Emits the encoder and decoder functions of one message type."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.fn = type_name.replace("/", "_")
        self.enc: list[str] = [f"def enc_{self.fn}(m, b):"]
        self.dec: list[str] = [f"def dec_{self.fn}(d, o):", f"    m = new_{self.fn}(cls_{self.fn})"]
        self.deps: set[str] = set()
        self.counter = 0

    def var(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    @staticmethod
    def enc_align(size: int) -> str:
        # Offsets count from the end of the 4-byte encapsulation header.
        return f"b += Z[(4 - len(b)) & {size - 1}]" if size > 1 else ""

    @staticmethod
    def dec_align(size: int) -> str:
        return f"o += (4 - o) & {size - 1}" if size > 1 else ""

    def emit(self, lines: list[str], indent: int, *code: str) -> None:
        lines.extend("    " * indent + c for c in code if c)

    def field(self, name: str, node: tuple) -> None:
        kind, detail = node
        src = f"m.{name}"
        if kind == _BASE:
            self.base_encode(src, detail[0], 1, name)
            target = f"m.{name}"
            self.base_decode(target, detail[0], 1)
        elif kind == _NAME:
            self.deps.add(detail)
            dep = detail.replace("/", "_")
            self.emit(self.enc, 1, f"enc_{dep}({src}, b)")
            self.emit(self.dec, 1, f"m.{name}, o = dec_{dep}(d, o)")
        else:
            self.collection(name, kind, detail)

    def base_encode(self, src: str, base: str, indent: int, field: str) -> None:
        if base == "string":
            v = self.var()
            self.emit(
                self.enc, indent,
                f"{v} = {src}.encode()",
                "b += Z[-len(b) & 3]",
                f"b += U32.pack(len({v}) + 1)",
                f"b += {v}",
                "b += NUL",
            )
            return
        if base not in _PRIMITIVES:
            raise RosError(f"{self.type_name}: field '{field}' has unsupported type '{base}'")
        code, size, _ = _PRIMITIVES[base]
        value = f"check_bool({src})" if base == "bool" else src
        self.emit(self.enc, indent, self.enc_align(size), f"b += P_{base}({value})")

    def base_decode(self, target: str, base: str, indent: int) -> None:
        if base == "string":
            v = self.var()
            self.emit(
                self.dec, indent,
                "o += (4 - o) & 3",
                f"{v} = U32.unpack_from(d, o)[0]",
                f"{target} = d[o + 4:o + 3 + {v}].decode() if {v} else ''",
                f"o += 4 + {v}",
            )
            return
        code, size, _ = _PRIMITIVES[base]
        self.emit(self.dec, indent, self.dec_align(size), f"{target} = U_{base}(d, o)[0]", f"o += {size}")

    def collection(self, name: str, kind: int, detail: tuple) -> None:
        (inner_kind, inner_detail), size = detail
        src = f"m.{name}"
        fixed = kind == _ARRAY
        if inner_kind == _BASE and inner_detail[0] in _PRIMITIVES:
            _, item, dtype = _PRIMITIVES[inner_detail[0]]
            a, n = self.var(), self.var()
            self.emit(self.enc, 1, f"{a} = as_array({src}, DT_{dtype.str[1:]}_{dtype.kind}, {name!r})")
            if fixed:
                self.emit(
                    self.enc, 1,
                    f"if len({a}) != {size}: raise ValueError('field {name} must have exactly {size} elements, got %d' % len({a}))",
                    self.enc_align(item),
                    f"b += {a}.data if {a}.flags.c_contiguous else {a}.tobytes()",
                )
                self.emit(self.dec, 1, self.dec_align(item))
                self.emit(self.dec, 1, f"m.{name} = frombuffer(d, DT_{dtype.str[1:]}_{dtype.kind}, {size}, o)", f"o += {size * item}")
            else:
                self.emit(self.enc, 1, "b += Z[-len(b) & 3]", f"b += U32.pack(len({a}))")
                if item > 1:
                    self.emit(self.enc, 1, f"if len({a}): {self.enc_align(item)}")
                self.emit(self.enc, 1, f"b += {a}.data if {a}.flags.c_contiguous else {a}.tobytes()")
                self.emit(self.dec, 1, "o += (4 - o) & 3", f"{n} = U32.unpack_from(d, o)[0]", "o += 4")
                if item > 1:
                    self.emit(self.dec, 1, f"if {n}: {self.dec_align(item)}")
                self.emit(
                    self.dec, 1,
                    f"m.{name} = frombuffer(d, DT_{dtype.str[1:]}_{dtype.kind}, {n}, o)",
                    f"o += {n} * {item}",
                )
            return
        # Strings or nested messages: a Python list.
        seq, n, item = self.var(), self.var(), self.var()
        self.emit(self.enc, 1, f"{seq} = {src}")
        if fixed:
            self.emit(
                self.enc, 1,
                f"if len({seq}) != {size}: raise ValueError('field {name} must have exactly {size} elements, got %d' % len({seq}))",
            )
            self.emit(self.dec, 1, f"{n} = {size}")
        else:
            self.emit(self.enc, 1, "b += Z[-len(b) & 3]", f"b += U32.pack(len({seq}))")
            self.emit(self.dec, 1, "o += (4 - o) & 3", f"{n} = U32.unpack_from(d, o)[0]", "o += 4")
        self.emit(self.enc, 1, f"for {item} in {seq}:")
        self.emit(self.dec, 1, f"m.{name} = []", f"for _ in range({n}):")
        if inner_kind == _NAME:
            self.deps.add(inner_detail)
            dep = inner_detail.replace("/", "_")
            self.emit(self.enc, 2, f"enc_{dep}({item}, b)")
            self.emit(self.dec, 2, f"{item}, o = dec_{dep}(d, o)", f"m.{name}.append({item})")
        else:
            self.base_encode(item, inner_detail[0], 2, name)
            self.base_decode(item, inner_detail[0], 2)
            self.emit(self.dec, 2, f"m.{name}.append({item})")

    def source(self) -> str:
        if len(self.enc) == 1:
            self.enc.append("    pass")
        self.dec.append("    return m, o")
        return "\n".join(self.enc) + "\n\n" + "\n".join(self.dec) + "\n"


def _globals() -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "Z": _ZEROS,
        "NUL": b"\0",
        "U32": _U32,
        "as_array": _as_array,
        "check_bool": _check_bool,
        "frombuffer": np.frombuffer,
    }
    for base, (code, _size, dtype) in _PRIMITIVES.items():
        packer = struct.Struct("<" + code)
        namespace[f"P_{base}"] = packer.pack
        namespace[f"U_{base}"] = packer.unpack_from
        namespace[f"DT_{dtype.str[1:]}_{dtype.kind}"] = dtype
    return namespace


_codec_namespace = _globals()
_compiled: set[str] = set()


def _compile(type_name: str) -> None:
    """Generate and compile the codec of a type and, first, of every type it contains."""
    with _class_lock:
        if type_name in _compiled:
            return
        gen = _CodeGen(type_name)
        _, fields = _typestore().fielddefs[type_name]
        for name, node in fields:
            gen.field(name, node)
        for dep in gen.deps:
            message_class(dep)
            _compile(dep)
        cls = message_class(type_name)
        _codec_namespace[f"cls_{gen.fn}"] = cls
        _codec_namespace[f"new_{gen.fn}"] = object.__new__
        exec(compile(gen.source(), f"<robot_stack cdr {type_name}>", "exec"), _codec_namespace)
        _compiled.add(type_name)


@cache
def _codec(type_name: str) -> tuple[Callable, Callable]:
    _compile(type_name)
    fn = type_name.replace("/", "_")
    return _codec_namespace[f"enc_{fn}"], _codec_namespace[f"dec_{fn}"]


def serialize(message: Message) -> bytes:
    """CDR bytes (with the 4-byte encapsulation header) of a message; RosError if a field is wrong."""
    return bytes(serialize_to_buffer(message))


def serialize_to_buffer(message: Message) -> bytearray:
    """``serialize`` without the final copy into ``bytes``: for the publish path, where a large
    message (an image) would otherwise cost a second buffer of its size and the page faults of it."""
    type_name = getattr(message, "__msgtype__", None)
    if not type_name or not isinstance(message, Message):
        raise RosError(
            f"cannot serialize {type(message).__name__}: expected a robot_stack.ros message "
            "(get its class with robot_stack.ros.message_class('pkg/msg/Type'))"
        )
    encode, _ = _codec(type_name)
    buffer = bytearray(CDR_HEADER)
    try:
        encode(message, buffer)
    except (TypeError, ValueError, AttributeError, OverflowError, struct.error, UnicodeError) as error:
        raise RosError(f"cannot serialize {type_name}: {_describe_bad_field(message) or error}") from None
    return buffer


def deserialize(data: bytes | memoryview, type_name: str) -> Message:
    """Decode CDR bytes (with header) into a message of ``type_name``."""
    type_name = normalize_type_name(type_name)
    message_class(type_name)
    _, decode = _codec(type_name)
    if bytes(data[:2]) not in (b"\x00\x01", b"\x00\x00"):
        raise RosError(f"cannot decode {type_name}: not little-endian XCDR1 data (header {bytes(data[:4]).hex()})")
    data = data if isinstance(data, bytes) else bytes(data)
    try:
        message, _ = decode(data, 4)
    except (struct.error, ValueError, UnicodeError) as error:
        raise RosError(f"cannot decode {type_name}: truncated or corrupt CDR data ({error})") from None
    return message


def _describe_bad_field(message: Message, path: str = "") -> str | None:
    """Find the first field whose value cannot be encoded, for an error message that names it."""
    _, fields = _typestore().fielddefs[message.__msgtype__]
    for name, node in fields:
        field_path = f"{path}{name}"
        if not hasattr(message, name):
            return f"field '{field_path}' is not set"
        value = getattr(message, name)
        kind, detail = node
        problem = _check_value(value, kind, detail, field_path)
        if problem:
            return problem
    return None


def _check_value(value: Any, kind: int, detail: Any, path: str) -> str | None:
    expected = _type_string((kind, detail))
    if kind == _BASE:
        base = detail[0]
        if base == "string":
            return None if isinstance(value, str) else f"field '{path}' expects string, got {type(value).__name__} {value!r}"
        if base == "bool":
            ok = isinstance(value, (bool, np.bool_))
        elif base.startswith("float"):
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if ok:
                code = _PRIMITIVES[base][0]
                try:
                    struct.pack("<" + code, value)
                except struct.error:
                    return f"field '{path}' value {value} is out of range for {base}"
        return None if ok else f"field '{path}' expects {base}, got {type(value).__name__} {value!r}"
    if kind == _NAME:
        if not isinstance(value, Message) or value.__msgtype__ != detail:
            return f"field '{path}' expects a {detail} message, got {type(value).__name__}"
        return _describe_bad_field(value, path + ".")
    (inner_kind, inner_detail), size = detail
    if inner_kind == _BASE and inner_detail[0] in _PRIMITIVES:
        try:
            array = _as_array(value, _PRIMITIVES[inner_detail[0]][2], path)
        except (TypeError, ValueError) as error:
            return str(error) + f" ({expected})"
        if kind == _ARRAY and len(array) != size:
            return f"field '{path}' must have exactly {size} elements, got {len(array)}"
        return None
    if not isinstance(value, (list, tuple)):
        return f"field '{path}' expects a list ({expected}), got {type(value).__name__}"
    if kind == _ARRAY and len(value) != size:
        return f"field '{path}' must have exactly {size} elements, got {len(value)}"
    for index, item in enumerate(value):
        problem = _check_value(item, inner_kind, inner_detail, f"{path}[{index}]")
        if problem:
            return problem
    return None


# ----------------------------------------------------------------------------- dict conversion


def to_dict(message: Message) -> dict[str, Any]:
    """Plain Python values (lists, not arrays) for printing or YAML."""
    out: dict[str, Any] = {}
    for name in message._fields:
        out[name] = _plain(getattr(message, name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Message):
        return to_dict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_dict(type_name: str, values: dict[str, Any] | None) -> Message:
    """Build a message from nested plain values (``robot-stack topic pub`` YAML); missing fields keep defaults."""
    cls = message_class(type_name)
    message = cls()
    if values is None:
        return message
    if not isinstance(values, dict):
        raise RosError(f"{cls.__msgtype__} values must be a mapping of field: value, got {values!r}")
    _, fields = _typestore().fielddefs[cls.__msgtype__]
    kinds = dict(fields)
    for name, value in values.items():
        if name not in kinds:
            raise RosError(f"{cls.__msgtype__} has no field '{name}'; its fields are: {', '.join(cls._fields)}")
        kind, detail = kinds[name]
        if kind == _NAME:
            value = from_dict(detail, value)
        elif kind in (_ARRAY, _SEQUENCE) and detail[0][0] == _NAME:
            if not isinstance(value, (list, tuple)):
                raise RosError(f"{cls.__msgtype__} field '{name}' is a list of {detail[0][1]}, got {value!r}")
            value = [from_dict(detail[0][1], v) for v in value]
        elif kind == _BASE and detail[0].startswith("float") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(message, name, value)
    return message
