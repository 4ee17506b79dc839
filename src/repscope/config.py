"""Typed dataclass configs that double as the CLI and load from YAML/TOML files.

A config is a frozen dataclass whose fields have type hints, defaults and a docstring-style
help string in ``field(metadata={"help": ...})``. :func:`cli_options` turns it into click
options; :func:`load_config` builds it from a file plus overrides; :func:`config_to_dict`
saves it. Unknown keys and badly typed values raise errors naming the key.

Example::

    @dataclass(frozen=True)
    class CaptureConfig:
        model: str = field(default="minilm", metadata={"help": "Model id or path."})
        layers: tuple[str, ...] = field(default=(), metadata={"help": "Layer globs."})

    @click.command()
    @cli_options(CaptureConfig)
    def capture(**kwargs):
        cfg = build_config(CaptureConfig, kwargs)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import click

__all__ = ["build_config", "cli_options", "config_to_dict", "load_config", "save_config"]

C = TypeVar("C")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _click_type(tp: Any) -> tuple[Any, bool]:
    """Return (click type, multiple) for a field type."""
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return click.Choice([str(a) for a in get_args(tp)]), False
    if origin in (tuple, list):
        inner = get_args(tp)[0] if get_args(tp) else str
        return _click_type(inner)[0], True
    if tp is Path:
        return click.Path(path_type=Path), False
    if tp in (int, float, str, bool):
        return tp, False
    return str, False  # parsed from JSON text by build_config


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def cli_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding one click option per dataclass field (``a_b`` -> ``--a-b``)."""
    hints = _hints(cls)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(dataclasses.fields(cls)):
            if not f.init or f.metadata.get("cli") is False:
                continue
            ctype, multiple = _click_type(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            help_ = f.metadata.get("help", "")
            base, _ = _unwrap_optional(hints[f.name])
            if base is bool:
                opt = click.option(f"{flag}/--no-{f.name.replace('_', '-')}", default=None,
                                   help=help_)
            else:
                opt = click.option(flag, type=ctype, multiple=multiple, default=None,
                                   help=help_ + _default_text(f), show_default=False)
            fn = opt(fn)
        return fn

    return deco


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return f" [default: {f.default!r}]"
    if f.default_factory is not dataclasses.MISSING:
        return f" [default: {f.default_factory()!r}]"
    return ""


def _coerce(cls: type, name: str, tp: Any, value: Any) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"Config {cls.__name__}: '{name}' must not be empty.")
    origin = get_origin(base)
    try:
        if origin is Literal:
            allowed = get_args(base)
            for a in allowed:
                if str(a) == str(value):
                    return a
            raise ValueError(f"one of {list(allowed)}")
        if origin in (tuple, list):
            inner = get_args(base)[0] if get_args(base) else str
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            items = [_coerce(cls, name, inner, v) for v in value]
            return tuple(items) if origin is tuple else items
        if base is Path:
            return Path(value)
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("a boolean")
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError("a boolean")
            return value
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("an int")
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if isinstance(value, str) and get_origin(base) in (dict, Mapping) or base is dict:
            return json.loads(value) if isinstance(value, str) else dict(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Config {cls.__name__}: '{name}' must be {exc if str(exc) else base}; "
            f"got {value!r}."
        ) from None


def build_config(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build ``cls`` from a mapping, ignoring ``None`` (unset CLI options), type-checking."""
    hints = _hints(cls)  # type: ignore[arg-type]
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"Unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(known)}."
        )
    kwargs = {}
    for k, v in values.items():
        if v is None or (isinstance(v, tuple) and v == () and _is_multiple(hints[k])):
            continue  # not given on the command line: keep the dataclass default
        kwargs[k] = _coerce(cls, k, hints[k], v)
    return cls(**kwargs)


def _is_multiple(tp: Any) -> bool:
    return get_origin(_unwrap_optional(tp)[0]) in (tuple, list)


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Load ``cls`` from a YAML (.yaml/.yml), TOML (.toml) or JSON file, then apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(
                f"Config file {str(path)!r} must end in .yaml, .yml, .toml or .json."
            )
        if not isinstance(values, dict):
            raise ValueError(f"Config file {str(path)!r} must hold a mapping of keys to values.")
    # None and () are what click passes for options not given: they keep the file's value
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    return build_config(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings, tuples as lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return config_to_dict(v)
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return {f.name: conv(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as JSON atomically (temporary file + rename)."""
    from repscope._io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(config_to_dict(cfg), indent=2, sort_keys=True))
