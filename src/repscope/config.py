"""Typed dataclass configs that double as the CLI and load from YAML/TOML files.

A config is a frozen dataclass whose fields have type hints, defaults and a docstring-style
help string in ``field(metadata={"help": ...})``. :func:`cli_options` turns it into click
options; :func:`with_config` adds ``--config FILE`` and resolves every option of a command as
explicit flag > config file > default; :func:`load_config` builds a config from a file plus
overrides in Python; :func:`config_to_dict` saves it. Unknown keys, badly typed values and
files that do not parse raise errors naming the file and the key.

Example::

    @dataclass(frozen=True)
    class CaptureConfig:
        model: str = field(default="minilm", metadata={"help": "Model id or path."})
        layers: tuple[str, ...] = field(default=(), metadata={"help": "Layer globs."})

    @click.command()
    @with_config(CaptureConfig)
    @cli_options(CaptureConfig)
    def capture(cfg: CaptureConfig):
        ...
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

from repscope.errors import ConfigError

__all__ = [
    "build_config",
    "cli_options",
    "config_to_dict",
    "load_config",
    "read_config_file",
    "save_config",
    "with_config",
]

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


class _Bad(Exception):
    """A value of the wrong type; ``args[0]`` says what was expected."""


def _expected(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    origin = get_origin(base)
    if origin is Literal:
        text = f"one of {list(get_args(base))}"
    elif origin in (tuple, list):
        inner = get_args(base)[0] if get_args(base) else str
        text = "a list of " + {str: "strings", int: "ints", float: "numbers", Path: "paths"}.get(
            inner, f"values ({_expected(inner)})")
    else:
        text = {int: "an int", float: "a number", bool: "a boolean", str: "a string",
                Path: "a path (string)"}.get(base, f"a {getattr(base, '__name__', base)}")
    return text + (" or null" if optional else "")


def _convert(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp``, or :class:`_Bad`."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise _Bad()
    origin = get_origin(base)
    if origin is Literal:
        for a in get_args(base):
            if str(a) == str(value) and not isinstance(value, list | dict | tuple):
                return a
        raise _Bad()
    if origin in (tuple, list):
        inner = get_args(base)[0] if get_args(base) else str
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise _Bad()
        items = [_convert(inner, v) for v in value]
        return tuple(items) if origin is tuple else items
    if base is Path:
        if not isinstance(value, str | Path):
            raise _Bad()
        return Path(value)
    if base is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise _Bad()
        return value
    if base is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):
            raise _Bad()
        return int(value)
    if base is float:
        try:
            if isinstance(value, bool) or isinstance(value, list | dict | tuple):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise _Bad() from None
    if base is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Bad()
        return str(value)
    if isinstance(value, str) and get_origin(base) in (dict, Mapping) or base is dict:
        try:
            return json.loads(value) if isinstance(value, str) else dict(value)
        except (TypeError, ValueError):
            raise _Bad() from None
    return value


def _coerce(cls: type, name: str, tp: Any, value: Any, origin: str | None = None) -> Any:
    """``value`` converted to the field's type; a ``ValueError`` naming the key otherwise
    (and the config file ``origin`` when the value came from one)."""
    try:
        return _convert(tp, value)
    except _Bad:
        if value is None and not _unwrap_optional(tp)[1]:
            what = f"'{name}' must not be empty"
        else:
            what = f"'{name}' must be {_expected(tp)}; got {value!r}"
        if origin is not None:
            raise ConfigError(f"Config file {origin!r}: key {what} ({cls.__name__}).") from None
        raise ValueError(f"Config {cls.__name__}: {what}.") from None


def _unknown_keys(cls_or_command: str, unknown: list[str], known: set[str],
                  origin: str | None) -> ValueError:
    import difflib

    hints = {k: difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6) for k in unknown}
    hint = "; ".join(f"did you mean {h[0]!r} for {k!r}?" for k, h in hints.items() if h)
    text = (f"Unknown key(s) {unknown} for {cls_or_command}" + (f" ({hint})" if hint else "")
            + f"; known keys: {sorted(known)}.")
    if origin is not None:
        return ConfigError(f"Config file {origin!r}: {text}")
    return ValueError(text)


def build_config(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build ``cls`` from a mapping, ignoring ``None`` (unset CLI options), type-checking."""
    hints = _hints(cls)  # type: ignore[arg-type]
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise _unknown_keys(cls.__name__, unknown, known, None)
    kwargs = {}
    for k, v in values.items():
        if v is None or (isinstance(v, tuple) and v == () and _is_multiple(hints[k])):
            continue  # not given on the command line: keep the dataclass default
        kwargs[k] = _coerce(cls, k, hints[k], v)
    return cls(**kwargs)


def _build_given(cls: type[C], given: Mapping[str, tuple[Any, str | None]]) -> C:
    """Build ``cls`` from ``name -> (value, origin)``: every given value counts, ``None`` too
    (a config file's ``null``); ``origin`` is the config file a value came from, or None."""
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs = {k: _coerce(cls, k, hints[k], v, origin) for k, (v, origin) in given.items()}
    return cls(**kwargs)


def _is_multiple(tp: Any) -> bool:
    return get_origin(_unwrap_optional(tp)[0]) in (tuple, list)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file.

    Every problem (missing, not UTF-8, not parseable, not a mapping) is a
    :class:`~repscope.errors.ConfigError` naming the file and, for a syntax error, the line.
    Keys are returned with ``-`` read as ``_`` (``max-rows`` is ``max_rows``).
    """
    from repscope._io import read_utf8

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    if path.suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ConfigError(f"Config file {str(path)!r} must end in .yaml, .yml, .toml or .json.")
    try:
        text = read_utf8(path, what="Config file")
    except ConfigError:
        raise
    except ValueError as exc:  # not UTF-8: the same message, as a config error
        raise ConfigError(str(exc)) from None
    values = _parse(path, text)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of keys to values; "
                          f"it holds a {type(values).__name__}.")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def _parse(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {problem}{where}."
                              ) from None
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid JSON: {exc.msg} at line "
                          f"{exc.lineno}, column {exc.colno}.") from None


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Load ``cls`` from a YAML (.yaml/.yml), TOML (.toml) or JSON file, then apply overrides.

    Precedence: an override (not None) > the file > the dataclass default. A ``null`` in the
    file is a value (e.g. ``max_rows: null`` is every row), not "unset". Problems with the
    file raise :class:`~repscope.errors.ConfigError` naming the file and the key.
    """
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    given: dict[str, tuple[Any, str | None]] = {}
    if path is not None:
        if not Path(path).is_file():  # FileNotFoundError: what Python callers expect
            raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
        values = read_config_file(path)
        unknown = sorted(set(values) - known)
        if unknown:
            raise _unknown_keys(cls.__name__, unknown, known, str(path))
        given.update({k: (v, str(path)) for k, v in values.items()})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise _unknown_keys(cls.__name__, unknown, known, None)
    given.update({k: (v, None) for k, v in overrides.items() if v is not None})
    return _build_given(cls, given)


# -- the command line: explicit flag > config file > default -----------------------------------


def with_config(cls: type | None = None, *, symbols: Mapping[str, Mapping[str, Any]] | None = None
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a click command a ``--config FILE`` option whose keys are the command's options.

    Each option's value comes from, in order: the command line (an explicitly given flag), the
    config file, the default. The decision uses click's parameter source, never the value, so
    an absent ``multiple=True`` option (``()``) does not hide the file's list. With ``cls`` (a
    config dataclass whose fields are options, see :func:`cli_options`) the callback receives
    ``cfg=cls(...)`` instead of those fields; the other options arrive resolved as usual.
    ``symbols`` maps a key to words that stand for a value (``{"max_rows": {"all": None}}``),
    on the command line and in the file. Unknown keys, values of the wrong type and files that
    do not parse raise :class:`~repscope.errors.ConfigError` naming the file and the key.
    Required options may come from the file; one given nowhere is click's usual usage error.
    """
    import functools

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        required = []
        for param in getattr(fn, "__click_params__", []):
            if isinstance(param, click.Option) and param.required:
                param.required = False  # the file may provide it: checked after merging
                required.append(param.name)

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            ctx = click.get_current_context()
            config_file = kwargs.pop("config_file", None)
            kwargs = _merge(ctx, kwargs, config_file, cls, symbols or {})
            for name in required:
                if kwargs.get(name) is None:
                    param = next(p for p in ctx.command.params if p.name == name)
                    raise click.MissingParameter(ctx=ctx, param=param)
            return fn(**kwargs)

        wrapper.__click_params__ = list(getattr(fn, "__click_params__", []))  # type: ignore[attr-defined]
        what = f"{cls.__name__} keys and " if cls is not None else ""
        return click.option(
            "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None, help=f"YAML/TOML/JSON file with this command's options as keys "
            f"({what}e.g. 'max_rows: 500'); options given on the command line override it.",
        )(wrapper)

    return deco


def _key(param: click.Parameter) -> str:
    """The config key of an option: its long flag without dashes (``--max-rows`` -> max_rows)."""
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs[0][2:] if longs else str(param.name)).replace("-", "_")


def _merge(ctx: click.Context, kwargs: dict[str, Any], config_file: Path | None,
           cls: type | None, symbols: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from click.core import ParameterSource

    origin = None if config_file is None else str(config_file)
    values = read_config_file(config_file) if config_file is not None else {}
    params = {_key(p): p for p in ctx.command.params
              if isinstance(p, click.Option) and p.expose_value and p.name in kwargs}
    fields = ({f.name for f in dataclasses.fields(cls) if f.init} if cls is not None else set())
    known = set(params) | fields
    unknown = sorted(set(values) - known)
    if unknown:
        who = cls.__name__ if cls is not None else f"'{ctx.command_path}'"
        raise _unknown_keys(who, unknown, known, origin)

    def explicit(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

    def symbol(key: str, value: Any) -> Any:
        table = symbols.get(key, {})
        return table[value] if isinstance(value, str) and value in table else value

    out = dict(kwargs)
    given: dict[str, tuple[Any, str | None]] = {}
    for key in fields:
        name = params[key].name if key in params else key
        if key in params and explicit(str(name)):
            given[key] = (symbol(key, kwargs[name]), None)
        elif key in values:
            given[key] = (symbol(key, values[key]), origin)
        out.pop(str(name), None)
    for key, param in params.items():
        if key in fields or explicit(str(param.name)) or key not in values:
            continue
        out[str(param.name)] = _cast(ctx, param, symbol(key, values[key]), origin, key)
    if cls is not None:
        out["cfg"] = _build_given(cls, given)
    return out


def _cast(ctx: click.Context, param: click.Option, value: Any, origin: str | None,
          key: str) -> Any:
    """A config-file value through the option's click type (a ConfigError naming the key)."""
    if value is None:
        return None
    if param.multiple and not isinstance(value, list | tuple):
        value = [value]
    try:
        return param.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise ConfigError(f"Config file {origin!r}: key '{key}': {exc.message}") from None


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
