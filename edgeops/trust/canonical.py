"""Canonical JSON: the exact bytes a signature covers, and a strict parser for what comes in.

Rules of the canonical form (the same bytes on every machine, so a signature made on a
laptop verifies on a board):

* UTF-8, no byte order mark; non-ASCII characters are written as themselves, not escaped.
* Object keys sorted by code point; no whitespace (separators ``,`` and ``:``).
* Strings escaped as Python's :func:`json.dumps` does (``\\"``, ``\\\\``, control characters
  as ``\\uXXXX`` or the short escapes).
* Integers in decimal; floats in Python's shortest round-trip form (``0.1``, ``1e-05``).
  NaN and ±Infinity are rejected: they are not JSON and would not survive a round trip.
* Only ``dict`` with ``str`` keys, ``list``/``tuple``, ``str``, ``int``, ``float``,
  ``bool`` and ``None``.

The parser is strict in the other direction: a size cap before anything is decoded,
duplicate object keys rejected (two parsers could otherwise disagree on which one counts),
NaN/Infinity rejected, and every failure raised as an :class:`~edgeops.errors.InputError`
subclass chosen by the caller.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgeops.errors import InputError, SizeLimitError


def _check(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise InputError("value nests deeper than 64 levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"object keys must be strings, got {type(key).__name__}")
            _check(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"canonical JSON has no non-finite numbers, got {value!r}")
    elif value is None or isinstance(value, str | int | bool):
        return
    else:
        raise InputError(f"canonical JSON cannot encode {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """The canonical encoding of ``value`` (see the module docstring for the rules)."""
    _check(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate object key {key!r}")
        result[key] = value
    return result


def parse_json(
    data: bytes,
    *,
    max_size: int,
    what: str,
    error: type[InputError] = InputError,
) -> Any:
    """Decode ``data`` (UTF-8 JSON of at most ``max_size`` bytes) strictly.

    Raises :class:`SizeLimitError` when ``data`` is too large and ``error`` (an
    :class:`InputError` subclass) for anything that is not strict JSON.
    """
    if len(data) > max_size:
        raise SizeLimitError(f"{what} must be at most {max_size} bytes, got {len(data)}")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except RecursionError as exc:
        raise error(f"{what} nests too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicates, huge integers
        raise error(f"{what} is not valid JSON: {exc}") from exc
    try:
        _check(value)
    except InputError as exc:
        raise error(f"{what}: {exc}") from exc
    return value


__all__ = ["canonical_json", "parse_json"]
