"""A small, strict interpreter of the JSON Schema (draft 2020-12) subset the zoo uses.

``jsonschema`` is not a dependency of aca_keras, so the zoo validates ``entry.json`` with this
module, which reads the schema document itself (``zoo/schema/entry-v1.json``): the schema file
stays the single contract, and this code only knows the keywords. A schema that uses a keyword
outside the subset is refused (:class:`SchemaDocumentError`) instead of being half-applied.

Supported keywords: ``$schema``, ``$id``, ``$comment``, ``title``, ``description``, ``$defs``,
``$ref`` (local ``#/$defs/...`` only), ``type`` (one or a list), ``const``, ``enum``,
``properties``, ``required``, ``additionalProperties`` (boolean or schema), ``items``,
``minItems``, ``maxItems``, ``uniqueItems``, ``minLength``, ``maxLength``, ``pattern``,
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``oneOf``, ``anyOf``.

Type rules are JSON's, made strict for Python values: ``integer`` is an ``int`` that is not a
``bool`` (``1.0`` is not an integer here), ``number`` is an ``int`` or a finite ``float`` (not a
``bool``), ``object`` a ``dict`` with string keys, ``array`` a ``list``.

When the ``jsonschema`` package happens to be installed, :func:`validate` also runs its
draft 2020-12 validator and reports its errors, so both agree on the contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SchemaDocumentError", "ValidationIssue", "iter_errors", "validate"]

_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "$defs",
                          "examples", "default"})
_KEYWORDS = frozenset({
    "$ref", "type", "const", "enum", "properties", "required", "additionalProperties",
    "items", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "oneOf", "anyOf",
}) | _ANNOTATIONS
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


class SchemaDocumentError(Exception):
    """The schema document itself is invalid or uses an unsupported keyword."""


class ValidationIssue:
    """One validation error: ``pointer`` (JSON pointer into the instance) and ``message``."""

    __slots__ = ("message", "pointer")

    def __init__(self, pointer: str, message: str):
        self.pointer = pointer
        self.message = message

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"

    def __repr__(self) -> str:
        return f"ValidationIssue({self.pointer!r}, {self.message!r})"


def validate(instance: Any, schema: Mapping[str, Any]) -> list[ValidationIssue]:
    """All errors of ``instance`` against ``schema`` (empty when valid), in document order.

    When this interpreter finds none and ``jsonschema`` is installed, its errors are returned
    instead (a disagreement is a bug, reported rather than hidden)."""
    check_schema(schema)
    issues = _dedupe(list(iter_errors(instance, schema)))
    if not issues:  # a cross-check: the contract is the schema document, not this code
        issues = _jsonschema_errors(instance, schema)
    return issues


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a schema with unsupported keywords, bad types or dangling ``$ref``."""
    defs = schema.get("$defs", {})

    def walk(node: Any, where: str) -> None:
        if isinstance(node, bool):
            return
        if not isinstance(node, Mapping):
            raise SchemaDocumentError(f"{where}: a schema must be an object or a boolean")
        unknown = sorted(set(node) - _KEYWORDS)
        if unknown:
            raise SchemaDocumentError(
                f"{where}: unsupported schema keyword(s) {unknown}; aca_keras.zoo's validator "
                f"supports {sorted(_KEYWORDS)}")
        types = node.get("type")
        if types is not None:
            for t in [types] if isinstance(types, str) else types:
                if t not in _TYPES:
                    raise SchemaDocumentError(f"{where}: unknown type {t!r}")
        ref = node.get("$ref")
        if ref is not None:
            _resolve_ref(ref, defs, where)
        if "pattern" in node:
            try:
                re.compile(node["pattern"])
            except re.error as exc:
                raise SchemaDocumentError(f"{where}: bad pattern: {exc}") from None
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties"):
            if key in node:
                walk(node[key], f"{where}/{key}")
        for key in ("oneOf", "anyOf"):
            for i, sub in enumerate(node.get(key, [])):
                walk(sub, f"{where}/{key}/{i}")

    walk(schema, "#")


def iter_errors(instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationIssue]:
    """Yield the validation errors of ``instance`` (this module's interpreter only)."""
    yield from _check(instance, schema, "", schema.get("$defs", {}))


# ----------------------------------------------------------------------------- interpreter


def _resolve_ref(ref: Any, defs: Mapping[str, Any], where: str) -> Any:
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or "/" in ref[len(prefix):]:
        raise SchemaDocumentError(f"{where}: only local references '#/$defs/NAME' are "
                                  f"supported, got {ref!r}")
    name = ref[len(prefix):]
    if name not in defs:
        raise SchemaDocumentError(f"{where}: $ref {ref!r} names no definition")
    return defs[name]


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    actual = _type_of(value)
    if name == "number":
        return actual in ("integer", "number") and (actual == "integer" or math.isfinite(value))
    return actual == name


def _is_number(value: Any) -> bool:
    return _is_type(value, "number")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _pointer(base: str, token: Any) -> str:
    text = str(token).replace("~", "~0").replace("/", "~1")
    return f"{base}/{text}"


def _check(value: Any, schema: Any, ptr: str, defs: Mapping[str, Any]
           ) -> Iterator[ValidationIssue]:
    if schema is True:
        return
    if schema is False:
        yield ValidationIssue(ptr, "no value is allowed here")
        return
    if "$ref" in schema:
        yield from _check(value, _resolve_ref(schema["$ref"], defs, ptr), ptr, defs)
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is_type(value, t) for t in types):
            want = " or ".join(types)
            yield ValidationIssue(ptr, f"expected {want}, got {_type_of(value)} {_show(value)}")
            return  # the other keywords would only repeat the type error
    if "const" in schema and not _json_equal(value, schema["const"]):
        yield ValidationIssue(ptr, f"must be {schema['const']!r}, got {_show(value)}")
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        yield ValidationIssue(ptr, f"{_show(value)} is not one of {schema['enum']}")
    if isinstance(value, str):
        yield from _check_string(value, schema, ptr)
    if _is_number(value):
        yield from _check_number(value, schema, ptr)
    if isinstance(value, list):
        yield from _check_array(value, schema, ptr, defs)
    if isinstance(value, Mapping):
        yield from _check_object(value, schema, ptr, defs)
    if "anyOf" in schema:
        branches = [list(_check(value, s, ptr, defs)) for s in schema["anyOf"]]
        if all(branches):
            yield _nearest(ptr, "anyOf", branches)
    if "oneOf" in schema:
        branches = [list(_check(value, s, ptr, defs)) for s in schema["oneOf"]]
        passed = [i for i, errors in enumerate(branches) if not errors]
        if not passed:
            yield _nearest(ptr, "oneOf", branches)
        elif len(passed) > 1:
            yield ValidationIssue(ptr, f"matches {len(passed)} alternatives of oneOf "
                                       f"({passed}); exactly one is allowed")


def _nearest(ptr: str, keyword: str, branches: list[list[ValidationIssue]]) -> ValidationIssue:
    """Report a failed ``oneOf``/``anyOf`` by its nearest alternative (fewest errors)."""
    best = min(range(len(branches)), key=lambda i: len(branches[i]))
    first = branches[best][0]
    return ValidationIssue(first.pointer, f"{first.message} (matches none of the {keyword} "
                                          f"alternatives at {ptr or '/'}; nearest is #{best})")


def _check_string(value: str, schema: Mapping[str, Any], ptr: str) -> Iterator[ValidationIssue]:
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield ValidationIssue(ptr, f"must have at least {schema['minLength']} character(s)")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield ValidationIssue(ptr, f"must have at most {schema['maxLength']} characters, "
                                   f"has {len(value)}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield ValidationIssue(ptr, f"{_show(value)} does not match {schema['pattern']!r}")


def _check_number(value: float, schema: Mapping[str, Any], ptr: str
                  ) -> Iterator[ValidationIssue]:
    if "minimum" in schema and value < schema["minimum"]:
        yield ValidationIssue(ptr, f"{value} is below the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        yield ValidationIssue(ptr, f"{value} is above the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        yield ValidationIssue(ptr, f"{value} must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        yield ValidationIssue(ptr, f"{value} must be less than {schema['exclusiveMaximum']}")


def _check_array(value: list, schema: Mapping[str, Any], ptr: str, defs: Mapping[str, Any]
                 ) -> Iterator[ValidationIssue]:
    if "minItems" in schema and len(value) < schema["minItems"]:
        yield ValidationIssue(ptr, f"must have at least {schema['minItems']} item(s), "
                                   f"has {len(value)}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield ValidationIssue(ptr, f"must have at most {schema['maxItems']} item(s), "
                                   f"has {len(value)}")
    if schema.get("uniqueItems"):
        for i in range(len(value)):
            if any(_json_equal(value[i], value[j]) for j in range(i)):
                yield ValidationIssue(_pointer(ptr, i), f"{_show(value[i])} is a duplicate; "
                                                        "items must be unique")
    if "items" in schema:
        for i, item in enumerate(value):
            yield from _check(item, schema["items"], _pointer(ptr, i), defs)


def _check_object(value: Mapping[str, Any], schema: Mapping[str, Any], ptr: str,
                  defs: Mapping[str, Any]) -> Iterator[ValidationIssue]:
    for key in value:
        if not isinstance(key, str):
            yield ValidationIssue(ptr, f"object keys must be strings, got {key!r}")
    missing = [k for k in schema.get("required", ()) if k not in value]
    if missing:
        yield ValidationIssue(ptr, f"missing required key(s) {missing}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            yield from _check(item, properties[key], _pointer(ptr, key), defs)
        elif extra is False:
            allowed = sorted(properties)
            yield ValidationIssue(_pointer(ptr, key), f"unknown key {key!r}; allowed keys are "
                                                      f"{allowed}")
        elif extra is not True:
            yield from _check(item, extra, _pointer(ptr, key), defs)


# ------------------------------------------------------------------------------ jsonschema


def _jsonschema_errors(instance: Any, schema: Mapping[str, Any]) -> list[ValidationIssue]:
    try:
        import jsonschema  # optional: used only when it is installed
    except ImportError:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for error in validator.iter_errors(instance):
        ptr = "".join(_pointer("", p) for p in error.absolute_path)
        out.append(ValidationIssue(ptr, f"{error.message} (jsonschema)"))
    return out


def _dedupe(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.pointer, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
