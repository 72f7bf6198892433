"""The keys of each command's schema and their types: hints for mistyped keys and values."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from snnexp.config import schema as S

COMMAND_SCHEMAS: dict[str, type] = {
    "train": S.TrainConfig,
    "evaluate": S.EvaluateConfig,
    "simulate": S.SimulateConfig,
    "summarize": S.SummarizeConfig,
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def schema_keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of the dataclass ``cls`` (nested dataclasses expanded) -> its type."""
    out: dict[str, Any] = {}
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        inner, _ = _unwrap(tp)
        out[key] = tp
        if dataclasses.is_dataclass(inner):
            out.update(schema_keys(inner, f"{key}."))
    return out


def key_type(cls: type, key: str) -> Any | None:
    """The annotated type of the dotted ``key`` in ``cls`` (list items: the item type)."""
    parts = [p for p in key.split(".") if p]
    tp: Any = cls
    for part in parts:
        inner, _ = _unwrap(tp)
        if typing.get_origin(inner) is list and part.isdigit():
            tp = typing.get_args(inner)[0] if typing.get_args(inner) else Any
            continue
        if not dataclasses.is_dataclass(inner):
            return None
        hints = _hints(inner)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def describe_type(tp: Any) -> str:
    """``int | None`` -> 'an integer or null'."""
    inner, optional = _unwrap(tp)
    origin = typing.get_origin(inner)
    if inner is bool:
        text = "true or false"
    elif inner is int:
        text = "an integer (e.g. 10)"
    elif inner is float:
        text = "a number (e.g. 0.5)"
    elif inner is str:
        text = "a string"
    elif origin is list:
        item = typing.get_args(inner)[0] if typing.get_args(inner) else Any
        text = f"a list of {describe_type(item).split(' (')[0]}s in brackets, e.g. [a,b]" \
            if item is not Any else "a list in brackets, e.g. [a,b]"
        text = text.replace("an integers", "integers").replace("a numbers", "numbers") \
            .replace("a strings", "strings")
    elif origin is dict or inner is dict:
        text = "a mapping, e.g. {key: value}"
    elif dataclasses.is_dataclass(inner):
        text = "a group of settings (set its keys, e.g. key.sub=value)"
    else:
        text = "a value"
    return f"{text} or null" if optional else text


def suggest(key: str, command: str) -> list[str]:
    """Known keys of ``command`` close to the mistyped ``key``."""
    cls = COMMAND_SCHEMAS.get(command, S.TrainConfig)
    known = list(schema_keys(cls))
    leaf = key.rsplit(".", 1)[-1]
    # a right name in the wrong place first (trainer.lr -> optimizer.lr), then near spellings
    close = [k for k in known if k.rsplit(".", 1)[-1] == leaf and k != key][:2]
    return close or difflib.get_close_matches(key, known, n=2, cutoff=0.75)


def unknown_key_message(key: str, command: str) -> str:
    """One line for a key the command does not have, with the nearest known keys."""
    key = key.lstrip("+~")
    if command == "evaluate" and key.startswith(("trainer.", "optimizer.", "model.", "norm.",
                                                 "scheduler.")):
        return (f"config key '{key}' is not a setting of snnexp evaluate: the network and its "
                "training settings come from the checkpoint; evaluate takes trainer.device, "
                "trainer.num_threads and trainer.execution")
    close = suggest(key, command)
    hint = f"did you mean {' or '.join(close)}?" if close else "check its spelling"
    return (f"config key '{key}' does not exist in snnexp {command}: {hint} "
            f"(snnexp {command} --help lists every key)")


def type_error_message(key: str, value: str, command: str) -> str:
    """One line for a value of the wrong type, naming the type the key expects."""
    cls = COMMAND_SCHEMAS.get(command, S.TrainConfig)
    tp = key_type(cls, key)
    if tp is None:
        return unknown_key_message(key, command)
    return (f"config key '{key}' = {value} has the wrong type: expected {describe_type(tp)}")
