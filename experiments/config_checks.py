"""Typed checks of single config values, each failing with `group.key=value` and what is allowed.

The building blocks of experiments/validate.py. Values arrive as Hydra parsed the command line:
`seed=abc` is the string "abc", `prompts.num_prompts=2.5` a float, `task.generate=yes` a string, so
every check tests the type as well as the range (and a bool is never taken for an integer).
"""

from __future__ import annotations

from typing import Any, Iterable

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config value that is not allowed; the message names `group.key=value` and what is allowed instead.

    `key` is the dotted key at fault (None when the fault is not one key's), so that a sweep can tell
    whether the value it checked is one its jobs replace.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def show(path: str, value: Any) -> str:
    """`path=value` as a user would type it on the command line."""
    if value is None:
        return f"{path}=null"
    if isinstance(value, bool):
        return f"{path}={str(value).lower()}"
    if isinstance(value, str):
        return f"{path}={value!r}"
    return f"{path}={value}"


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_int(node: DictConfig, key: str, minimum: int | None = None, maximum: int | None = None, *,
              none: str | None = None, path: str = "") -> int | None:
    """An integer in [minimum, maximum]; null only when `none` says what null means."""
    value = node.get(key)
    if value is None and none is not None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            allowed = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            allowed = f"an integer >= {minimum}"
        else:
            allowed = "an integer"
        raise ConfigError(f"{show(_key(path, key), value)} is not allowed: use {allowed}"
                          + (f", or {none}" if none else ""), _key(path, key))
    return value


def check_bool(node: DictConfig, key: str, *, path: str = "") -> bool:
    value = node.get(key)
    if not isinstance(value, bool):
        raise ConfigError(f"{show(_key(path, key), value)} is not allowed: use true or false", _key(path, key))
    return value


def check_string(node: DictConfig, key: str, *, path: str = "") -> str:
    value = node.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{show(_key(path, key), value)} is not allowed: use a non-empty string", _key(path, key))
    return value


def check_choice(node: DictConfig, key: str, choices: Iterable[str], *, path: str = "", none: bool = False) -> Any:
    """One of `choices` (or null when `none`)."""
    value = node.get(key)
    choices = tuple(choices)
    if value is None and none:
        return None
    if value not in choices:
        allowed = ", ".join(choices) + (" or null" if none else "")
        raise ConfigError(f"{show(_key(path, key), value)} is not known: use one of {allowed}", _key(path, key))
    return value


def check_keys(node: DictConfig, path: str, allowed: Iterable[str], what: str | None = None) -> None:
    """No key outside `allowed`: a `+prompts.num_prompt=3` typo would otherwise be ignored without a word."""
    allowed = set(allowed)
    unknown = sorted(str(k) for k in node if k not in allowed)
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f" (did you mean {_key(path, close[0])}?)" if close else ""
        raise ConfigError(f"{show(_key(path, key), node.get(key))} is not {what or 'a key of ' + (path or 'the config')}"
                          f"{hint}: its keys are {', '.join(sorted(allowed - {'_target_'}))}", _key(path, key))
