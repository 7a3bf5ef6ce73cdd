"""One config source of truth: YAML -> nested typed dataclasses, with dotted overrides.

    cfg = load_config(PretrainConfig, "pretrain/configs/tiny.yaml", ["train.lr=3e-4", "model.text=minilm-l6"])

A file may start from another: `base: default.yaml` (relative to the file) takes that file's settings and
overrides them section by section.

Rules (each violation is a one-line `ConfigError` naming the key and the file):
- every key in the YAML and in an override must be a field of the dataclass (no silent typos);
- override values are parsed as Python literals (`3e-4`, `true`, `[1, 2]`, `'x'`), falling back to the raw string;
- every value is checked against the field's annotation (int, float, str, bool, Optional[...], Literal[...],
  list[...], dict[str, ...], nested dataclasses); an int is accepted where a float is expected, nothing else is
  coerced.
"""
from __future__ import annotations

import ast
import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from common.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to annotation `tp`, or raise ConfigError naming `where`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        if value is None and "none" in get_args(tp):  # an override `key=none` reads as null (parse_value)
            value = "none"
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_check(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_check(k, key_tp, where): _check(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    return _check_scalar(value, tp, where)


def _check_scalar(value: Any, tp: Any, where: str) -> Any:
    """_check for the plain types: bool, int, float (ints widen), str."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:  # `key=none` parses as null; a plain string field means the word (e.g. data.context=none)
            value = "none"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (valid keys here: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field with no default was not given
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def from_dict(cls: type[T], data: dict | None, source: str = "") -> T:
    """Build dataclass `cls` from a plain mapping; `source` names the file in error messages."""
    try:
        return _build(cls, data or {}, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def check_ranges(section: str, obj, rules: dict[str, tuple[float, float | None]]) -> None:
    """Each field named in `rules` lies in [low, high] (high None: no upper bound), else a one-line ConfigError
    naming section.field: a zero batch size or epoch count fails here, not as a ZeroDivisionError mid-run."""
    for name, (low, high) in rules.items():
        value = getattr(obj, name)
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{section}.{name}: must be {bound}, got {value}")


def parse_value(text: str) -> Any:
    """Parse an override value as a Python literal; YAML-style true/false/null too; else the raw string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings onto a nested mapping (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        set_dotted(data, dotted.strip(), parse_value(raw), f"override {item!r}")
    return data


def set_dotted(data: dict, dotted: str, value: Any, where: str) -> dict:
    """data["a"]["b"]["c"] = value for dotted "a.b.c", making the sections on the way (in place)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {key} is not a section")
    node[keys[-1]] = value
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a mapping. `base: other.yaml` (relative to the file) names a file whose settings this one
    overrides, section by section; chains are followed, cycles are an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {_seen[-1]})" if _seen else ""))
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: base files form a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name, got {base!r}")
    return _merge(read_yaml(path.parent / base, (*_seen, path.resolve())), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read YAML `path` (optional; with its `base:` chain), apply dotted `overrides`, and build a checked `cls`."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data, str(path) if path is not None else "")


def save_config(cfg: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config to {"train.lr": 3e-4, ...} for MLflow params (lists become strings)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out


def differing_keys(have: dict, want: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys of two flattened configs whose values differ (a key one lacks differs), `ignore`d keys aside."""
    return [k for k in {**have, **want} if k not in ignore and have.get(k) != want.get(k)]
