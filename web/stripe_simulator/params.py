"""Stripe's request parameters and error answers, as the simulator reads and writes them.

stripe-python form-encodes nested parameters with bracket keys (`items[0][price]`,
`metadata[user_id]`, `expand[0]=schedule`); `decode` turns those pairs back into the
nested dicts and lists the API reference describes. Every refusal is a `StripeError`
carrying Stripe's status code and its `{"error": {type, code, message, param}}` body,
so a bad input is a clear 4xx and never a 500.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class StripeError(Exception):
    """One Stripe error answer: raised anywhere, rendered by the HTTP layer."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.extra = extra

    def body(self) -> dict:
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param)


def missing(object_name: str, object_id: Any, param: str = "id") -> StripeError:
    return StripeError(404 if param == "id" else 400, f"No such {object_name}: '{object_id}'",
                       code="resource_missing", param=param)


def card_declined(message: str = "Your card was declined.", **extra: Any) -> StripeError:
    return StripeError(402, message, type="card_error", code="card_declined", decline_code="generic_decline", **extra)


# -- decoding ------------------------------------------------------------------------------

def decode(pairs: Iterable[tuple[str, str]]) -> dict:
    """Bracket-keyed form pairs -> nested dicts/lists (`a[0][b]=1` -> {"a": [{"b": "1"}]})."""
    root: dict = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise invalid(f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node = root
        for depth, part in enumerate(parts):
            if part == "":  # `expand[]=x`: the next free position
                part = str(len(node))
            last = depth == len(parts) - 1
            if last:
                if isinstance(node.get(part), dict):
                    raise invalid(f"Invalid value for {key}: it is also given as a hash.", param=key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(f"Invalid hash for {key}: it is also given as a string.", param=key)
                node = child
    return {key: _listify(value) for key, value in root.items()}  # the top level stays named


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


# -- checks --------------------------------------------------------------------------------

def allow(params: Any, allowed: Iterable[str], prefix: str = "") -> dict:
    """`params` as a dict holding only known keys (Stripe refuses the others by name)."""
    if params == "" or params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid(f"Invalid hash: {prefix or 'parameters'}", param=prefix or None)
    known = set(allowed)
    for key in params:
        if key not in known:
            name = f"{prefix}[{key}]" if prefix else key
            raise invalid(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
    return params


def require(params: dict, name: str, param: str | None = None) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise invalid(f"Missing required param: {param or name}.", param=param or name, code="parameter_missing")
    return value


def string(value: Any, param: str, max_length: int = 5000) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {param} must be a string", param=param)
    if len(value) > max_length:
        raise invalid(f"Invalid string: {param} must be at most {max_length} characters", param=param)
    return value


def text(params: dict, name: str, param: str | None = None, max_length: int = 5000) -> str | None:
    """An optional string parameter; missing or empty is None."""
    value = params.get(name)
    if value is None or value == "":
        return None
    return string(value, param or name, max_length)


def integer(value: Any, param: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"-?\d{1,18}", str(value)):
        raise invalid(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")
    number = int(value)
    if minimum is not None and number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param=param)
    if maximum is not None and number > maximum:
        raise invalid(f"This value must be less than or equal to {maximum}.", param=param)
    return number


def boolean(value: Any, param: str) -> bool:
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise invalid(f"Invalid boolean: {value}", param=param)


def choice(value: Any, param: str, choices: Iterable[str]) -> str:
    options = list(choices)
    if value not in options:
        listed = ", ".join(options[:-1]) + f", or {options[-1]}" if len(options) > 1 else options[0]
        raise invalid(f"Invalid {param}: must be one of {listed}", param=param)
    return value


def listed(value: Any, param: str) -> list:
    if value == "":
        return []
    if not isinstance(value, list):
        raise invalid(f"Invalid array: {param} must be an array", param=param)
    return value


def metadata(value: Any, param: str = "metadata", current: dict | None = None) -> dict:
    """Stripe's metadata rules: merged into `current`; an empty value unsets a key; an
    empty `metadata` clears all; 50 keys of 40 characters, values of 500."""
    result = dict(current or {})
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {param}", param=param)
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(f"Invalid string: {param}[{key}] must be a string", param=f"{param}[{key}]")
        if len(key) > 40:
            raise invalid(f"Metadata keys can have up to 40 characters: {key}", param=f"{param}[{key}]")
        if len(item) > 500:
            raise invalid(f"Metadata values can have up to 500 characters: {param}[{key}]", param=f"{param}[{key}]")
        if item == "":
            result.pop(key, None)
        else:
            result[key] = item
    if len(result) > 50:
        raise invalid("Metadata can have up to 50 keys.", param=param)
    return result
