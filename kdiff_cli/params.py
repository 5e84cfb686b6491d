"""The one ``key=value`` parser: ``--set``, ``--param``, ``--method name:key=value``, ``--method-opt``.

Every option that takes ``key=value`` pairs goes through here, so the same words mean the same
thing everywhere: booleans are ``true/yes/on/1`` and ``false/no/off/0`` (any case), ``none`` and
``null`` are None, numbers are Python's ``int``/``float`` syntax. Errors are one line and name
the option (``where``).
"""

from __future__ import annotations

from typing import Any

from kdiff_cli.errors import KdiffError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")


def split_pair(item: str, where: str, example: str = "key=value") -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``; a missing ``=`` or an empty key is an error."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise KdiffError(f"bad {where} {item!r}: expected {example}")
    return key, value


def parse_bool(text: str, key: str, where: str) -> bool:
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise KdiffError(f"bad {where} {key}={text!r}: expected true or false")


def parse_value(text: str) -> Any:
    """An untyped value: ``25`` -> 25, ``0.5`` -> 0.5, ``true``/``no`` -> bool, ``none`` -> None, else the string."""
    low = text.strip().lower()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if low in TRUE_WORDS or low in FALSE_WORDS:
        return low in TRUE_WORDS
    if low in NONE_WORDS:
        return None
    return text.strip()


def convert(text: str, default: Any, key: str, where: str, none_words: tuple[str, ...] = NONE_WORDS) -> Any:
    """``text`` converted to the type of ``default`` (a scalar); ``default`` None: a number or a none word."""
    if isinstance(default, bool):
        return parse_bool(text, key, where)
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if default is None:
            return None if text.strip().lower() in none_words else float(text)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(type(default), "a number or none")
        raise KdiffError(f"bad {where} {key}={text!r}: expected {kind}") from None
    return text


def parse_pairs(pairs: list[str] | tuple[str, ...], where: str) -> dict[str, Any]:
    """``["a=1", "b-c=x"]`` -> ``{"a": 1, "b_c": "x"}`` (untyped values; ``-`` in keys becomes ``_``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, value = split_pair(pair, where)
        out[key.replace("-", "_")] = parse_value(value)
    return out
