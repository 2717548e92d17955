"""Reading JSON request bodies strictly: a clear 422 naming the field, never a 500."""
from __future__ import annotations

import json
from typing import Any

from flask import request

from ..errors import ApiError


UNSAFE_TEXT = "must not contain NUL characters or unpaired surrogates"


def is_safe_text(value: str) -> bool:
    """False for text Postgres cannot store or UTF-8 cannot encode: a NUL character, or a
    lone UTF-16 surrogate (JSON's "\\ud800" escape decodes to one)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unsafe_field(body: dict) -> str | None:
    """The top-level field of a JSON object under which (at any depth, in a key or a
    value) unsafe text sits; "" for an unsafe top-level key; None when all is safe."""
    for name, value in body.items():
        if not is_safe_text(name):
            return ""
        pending = [value]
        while pending:  # iterative: a deeply nested body must not exhaust the stack
            item = pending.pop()
            if isinstance(item, str):
                if not is_safe_text(item):
                    return name
            elif isinstance(item, dict):
                for key, nested in item.items():
                    if not is_safe_text(key):
                        return name
                    pending.append(nested)
            elif isinstance(item, list):
                pending.extend(item)
    return None


def json_body() -> dict[str, Any]:
    """The request body as a JSON object; 422 when it is missing, malformed or not an
    object, or when any of its text could not be stored (naming the field), so no route
    can hand a NUL or a lone surrogate to the database or the encoder."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        raise ApiError(422, "Request body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(422, "Request body must be a JSON object.")
    field = _unsafe_field(body)
    if field == "":
        raise ApiError(422, f"Request body: field names {UNSAFE_TEXT}")
    if field is not None:
        raise ApiError(422, f"{field}: {UNSAFE_TEXT}", field=field)
    return body


def string_field(body: dict, name: str, *, required: bool = True, min_length: int = 0,
                 max_length: int = 10_000, strip: bool = False) -> str | None:
    """body[name] as a string within the length bounds; 422 naming the field otherwise.
    With `strip`, the maximum applies to the value as sent (as the OpenAPI schema says)
    and the minimum to what is left once surrounding whitespace is stripped."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{name}: field required", field=name)
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"{name}: must be a string", field=name)
    if "\x00" in value:
        raise ApiError(422, f"{name}: must not contain NUL characters", field=name)
    stripped = value.strip() if strip else value
    if len(value) > max_length or len(stripped) < min_length:
        raise ApiError(422, f"{name}: must be {min_length} to {max_length} characters", field=name)
    return stripped


def int_field(body: dict, name: str, *, default: int | None = None, minimum: int, maximum: int) -> int:
    """body[name] as an integer in [minimum, maximum] (booleans and floats refused)."""
    value = body.get(name, default)
    if value is None:
        raise ApiError(422, f"{name}: field required", field=name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ApiError(422, f"{name}: must be an integer from {minimum} to {maximum}", field=name)
    return value


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """A query-string integer in [minimum, maximum] (digits only, never formatted into SQL)."""
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not minimum <= int(text) <= maximum:
        raise ApiError(422, f"{name}: must be an integer from {minimum} to {maximum}", field=name)
    return int(text)
