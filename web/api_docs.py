"""The OpenAPI document (web/openapi.py) as a page for people: operations grouped by tag,
every field's type in words (`string or null`, `one of free, starter`, a link for a
schema), `code` spans in descriptions as <code>, and a curl example per operation."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from markupsafe import Markup, escape

_CODE_SPAN = re.compile(r"`([^`]+)`")
TAG_TITLES = {"auth": "Accounts and sign-in", "videos": "Videos", "account": "Credits and usage",
              "keys": "API keys", "billing": "Billing", "webhooks": "Webhooks", "branding": "Branding",
              "referrals": "Referrals", "batches": "Batches"}


def prose(text: str | None) -> Markup:
    """Description text with its `code` spans as <code>, everything else escaped."""
    escaped = str(escape(text or ""))
    return Markup(_CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", escaped))


def _code(value) -> str:
    return f"<code>{escape('null' if value is None else value)}</code>"


def schema_name(schema: dict) -> str | None:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else None


def type_label(schema: dict) -> Markup:
    """A schema's type in words, with links to named schemas."""
    name = schema_name(schema)
    if name:
        return Markup(f'<a href="#schema-{escape(name)}">{escape(name)}</a>')
    if "allOf" in schema:
        return Markup(" and ").join(type_label(part) for part in schema["allOf"])
    if "const" in schema:
        return Markup(f"always {_code(json.dumps(schema['const']))}")
    if "enum" in schema:
        return Markup("one of " + ", ".join(_code(value) for value in schema["enum"]))
    types = schema.get("type", "any")
    types = types if isinstance(types, list) else [types]
    words = []
    for kind in [t for t in types if t != "null"] or ["null"]:
        if kind == "array":
            words.append(Markup("array of ") + type_label(schema.get("items", {})))
        elif kind == "string" and schema.get("format"):
            words.append(Markup(f"string ({escape(schema['format'])})"))
        else:
            words.append(Markup(escape(kind)))
    if "null" in types and types != ["null"]:
        words.append(Markup("null"))
    return Markup(" or ").join(words)


def constraints(schema: dict) -> Markup:
    """Limits a client must respect, in words."""
    parts = []
    if "minLength" in schema or "maxLength" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        parts.append(f"{low}–{high} characters" if low and high is not None
                     else f"at most {high} characters" if high is not None else f"at least {low} characters")
    if "minimum" in schema or "maximum" in schema:
        low, high = schema.get("minimum"), schema.get("maximum")
        parts.append(f"{low}–{high}" if low is not None and high is not None
                     else f"at least {low}" if low is not None else f"at most {high}")
    if schema.get("pattern") == r"\S":
        parts.append("not blank")
    elif schema.get("pattern"):
        parts.append(f"matches {_code(schema['pattern'])}")
    if "minItems" in schema or "maxItems" in schema:
        parts.append(f"{schema.get('minItems', 0)}–{schema.get('maxItems', '…')} items")
    if "default" in schema:
        parts.append(f"default {_code(json.dumps(schema['default']))}")
    return Markup("; ".join(parts))


@dataclass
class Field:
    name: str
    type: Markup
    required: bool
    limits: Markup
    description: Markup
    children: list["Field"] = field(default_factory=list)


def fields_of(schema: dict, spec: dict, depth: int = 0) -> list[Field]:
    """The properties of an object schema (allOf parts merged, nested objects expanded
    one level); a named schema's fields are its own section, so they are linked instead."""
    if "allOf" in schema:
        return [f for part in schema["allOf"] for f in fields_of(_resolve(part, spec), spec, depth)]
    required = set(schema.get("required", []))
    result = []
    for name, prop in schema.get("properties", {}).items():
        items = prop.get("items") if isinstance(prop.get("items"), dict) else {}
        nested = prop if prop.get("properties") else items
        children = fields_of(nested, spec, depth + 1) if depth < 2 and nested.get("properties") else []
        result.append(Field(name, type_label(prop), name in required, constraints(prop),
                            prose(prop.get("description")), children))
    return result


def _resolve(schema: dict, spec: dict) -> dict:
    name = schema_name(schema)
    return spec["components"]["schemas"][name] if name else schema


@dataclass
class Operation:
    method: str
    path: str
    anchor: str
    summary: Markup
    description: Markup
    authenticated: bool
    parameters: list[dict]
    body: Markup | None
    body_fields: list[Field]
    responses: list[tuple[str, Markup, Markup | None]]
    curl: str
    # the successful answer's status and example body, pretty-printed (None without one)
    answer: tuple[str, str] | None = None


# what a reader would type for common fields, where the schema has no example
EXAMPLE_VALUES = {"email": "you@example.com", "password": "a-long-passphrase", "new_password": "another-passphrase",
                  "current_password": "a-long-passphrase", "topic": "The history of coffee", "name": "CI pipeline",
                  "refresh_token": "$REFRESH_TOKEN", "token": "TOKEN_FROM_THE_EMAIL", "code": "123456",
                  "challenge_token": "$CHALLENGE_TOKEN"}


def _body(op: dict) -> tuple[str | None, dict | None]:
    """The request body's media type and content: JSON when offered, else the first one
    (the branding upload is multipart/form-data)."""
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return "application/json", content["application/json"]
    return next(iter(content.items()), (None, None))


def _curl(method: str, path: str, op: dict, spec: dict) -> str:
    """A runnable example: the body filled with each required field's example or a
    placeholder of its type."""
    lines = [f"curl -X {method.upper()} https://YOUR-HOST{path}"]
    if op.get("security"):
        lines.append('  -H "Authorization: Bearer $TOKEN"')
    media_type, content = _body(op)
    if media_type == "multipart/form-data":
        schema = _resolve(content["schema"], spec)
        example = content.get("example") or {}
        for name, field in schema.get("properties", {}).items():
            if field.get("format") == "binary":
                lines.append(f"  -F '{name}=@{name}.png'")
            elif name in example:
                lines.append(f"  -F '{name}={example[name]}'")
    elif content and schema_name(content["schema"]):
        schema = _resolve(content["schema"], spec)
        # the document's own example when it has one (the body's, then the schema's)
        example = content.get("example") or (schema.get("examples") or [None])[0] or schema.get("example") or {
            f.name: EXAMPLE_VALUES.get(f.name) or _placeholder(_property(schema, f.name, spec))
            for f in fields_of(schema, spec) if f.required}
        lines.append('  -H "Content-Type: application/json"')
        lines.append(f"  -d '{json.dumps(example, ensure_ascii=False)}'")
    return " \\\n".join(lines)


def _answer(op: dict, spec: dict) -> tuple[str, str] | None:
    """(status, example as indented JSON) of the first successful answer that has one."""
    for status, response in sorted(op["responses"].items()):
        if status.startswith("2"):
            media = response.get("content", {}).get("application/json")
            if not media:
                return None
            example = media.get("example")
            if example is None:
                schema = _resolve(media.get("schema", {}), spec)
                example = (schema.get("examples") or [None])[0]
            return None if example is None else (status, json.dumps(example, indent=2, ensure_ascii=False))
    return None


def _property(schema: dict, name: str, spec: dict) -> dict:
    for part in schema.get("allOf", [schema]):
        part = _resolve(part, spec)
        if name in part.get("properties", {}):
            return part["properties"][name]
    return {}


def _placeholder(schema: dict):
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = next((t for t in kind if t != "null"), "string") if isinstance(kind, list) else kind
    return {"integer": schema.get("default", schema.get("minimum", 1)), "boolean": True, "array": [],
            "object": {}}.get(kind, "…")


def operations(spec: dict) -> dict[str, list[Operation]]:
    """The document's operations grouped by their first tag, in document order."""
    groups: dict[str, list[Operation]] = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            _, content = _body(op)
            body_schema = content["schema"] if content else None
            responses = []
            for status, response in sorted(op["responses"].items()):
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                responses.append((status, prose(response.get("description")),
                                  type_label(schema) if schema else None))
            parameters = [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                           "type": type_label(p.get("schema", {})), "limits": constraints(p.get("schema", {})),
                           "description": prose(p.get("description"))} for p in op.get("parameters", [])]
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append(Operation(
                method=method, path=path, anchor=f"{method}-{path.strip('/').replace('/', '-').replace('{', '').replace('}', '')}",
                summary=prose(op.get("summary")),
                # a description that only repeats the summary is not shown twice
                description=prose(None if op.get("description") in (op.get("summary"), f"{op.get('summary')}.")
                                  else op.get("description")),
                authenticated=bool(op.get("security")), parameters=parameters,
                body=type_label(body_schema) if body_schema else None,
                body_fields=fields_of(_resolve(body_schema, spec), spec) if body_schema else [],
                responses=responses, curl=_curl(method, path, op, spec), answer=_answer(op, spec)))
    return groups


def schemas(spec: dict) -> list[tuple[str, Markup, list[Field]]]:
    """Each named schema: (name, description, fields)."""
    return [(name, prose(schema.get("description")), fields_of(schema, spec))
            for name, schema in spec["components"]["schemas"].items()]


def page_context(spec: dict) -> dict:
    """What docs.html renders: the groups in the order the document declares its tags,
    each with that tag's description."""
    groups = operations(spec)
    declared = [tag["name"] for tag in spec.get("tags", [])]
    ordered = {tag: groups[tag] for tag in declared if tag in groups}
    ordered.update({tag: ops for tag, ops in groups.items() if tag not in ordered})
    return {"spec": spec, "info_description": prose(spec["info"].get("description")),
            "groups": ordered, "schemas": schemas(spec), "tag_titles": TAG_TITLES,
            "tag_descriptions": {tag["name"]: prose(tag.get("description")) for tag in spec.get("tags", [])}}
