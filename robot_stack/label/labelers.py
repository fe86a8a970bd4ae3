"""The labelers, one module each, and the table naming them (as robot_stack.learn.algorithms does)."""

from __future__ import annotations

import importlib
import importlib.util

from robot_stack.errors import LabelError

# Labeler name -> "module:Class"; registered here explicitly, imported on first use.
LABELERS: dict[str, str] = {
    "clip": "robot_stack.label.clip:ClipLabeler",
    "preference": "robot_stack.label.preference:PreferenceLabeler",
    "progress": "robot_stack.label.progress:ProgressLabeler",
    "success": "robot_stack.label.success:SuccessLabeler",
}


def labeler_class(name: str) -> type:
    """The class LABELERS names for `name`; LabelError for an unknown name or one this install cannot import."""
    if name not in LABELERS:
        raise LabelError(f"unknown labeler {name!r}: use one of {', '.join(LABELERS)}")
    module_name, class_name = LABELERS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only the labeler's own module missing is "not available"; a missing dependency inside it is a real fault.
        if error.name is None or not module_name.startswith(error.name):
            raise
        raise LabelError(f"labeler {name!r} is not available in this version of robot_stack ({module_name} is "
                         f"missing): use one of {', '.join(available_labelers())}") from None
    if not hasattr(module, class_name):
        raise LabelError(f"labeler {name!r}: {module_name} has no {class_name}; the labeler table "
                         "(robot_stack.label.labelers) and the module disagree")
    return getattr(module, class_name)


def available_labelers() -> list[str]:
    """The names in LABELERS whose modules exist in this install."""
    return [name for name, target in LABELERS.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None]
