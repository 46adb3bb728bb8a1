"""Validation of zoo documents against their JSON Schema (draft 2020-12) with ``jsonschema``.

The schema file (``zoo/schema/entry-v1.json``) is the contract; ``jsonschema`` applies it. This
module adds three things around the library:

* strict types for Python values: ``integer`` is an ``int`` that is not a ``bool`` (``1.0`` is
  *not* an integer here, unlike plain JSON Schema), ``number`` is an ``int`` or a finite
  ``float`` (not a ``bool``);
* a checked schema document: besides the draft's meta-schema, a keyword that draft 2020-12
  does not define (a typo such as ``"requried"``, which ``jsonschema`` would silently ignore)
  and a ``$ref`` that is not a local pointer to an existing part of the document are refused
  with :class:`SchemaDocumentError`;
* readable errors: each :class:`ValidationIssue` holds a JSON pointer to the failing value and
  what was expected there (``/macro/cells: expected integer, got string '20'``), in document
  order.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import referencing.exceptions

from aca_keras.space.validation import is_int

__all__ = ["SchemaDocumentError", "ValidationIssue", "check_schema", "validate"]


class SchemaDocumentError(Exception):
    """The schema document itself is invalid or uses an unknown keyword."""


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

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ValidationIssue) and self.pointer == other.pointer
                and self.message == other.message)

    def __hash__(self) -> int:
        return hash((self.pointer, self.message))


# ------------------------------------------------------------------------------ validator


def _is_integer(_checker: Any, value: Any) -> bool:
    return is_int(value)


def _is_number(_checker: Any, value: Any) -> bool:
    return _is_integer(_checker, value) or (isinstance(value, float) and math.isfinite(value))


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))

# Keywords of draft 2020-12 that hold no validation logic of their own (core, annotations,
# and the branches read by "if").
_ANNOTATIONS = frozenset({
    "$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary", "$comment", "$defs",
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "contentEncoding", "contentMediaType", "contentSchema", "then", "else",
})
_KEYWORDS = frozenset(_Validator.VALIDATORS) | _ANNOTATIONS
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                  "propertyNames", "unevaluatedItems", "unevaluatedProperties")


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a schema that is not valid draft 2020-12, uses a keyword the draft does not
    define, or holds a ``$ref`` that is not a local pointer into the document."""
    try:
        _Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "#" + "".join(_pointer("", p) for p in exc.absolute_path)
        raise SchemaDocumentError(f"{where}: {exc.message}") from None

    def walk(node: Any, where: str) -> None:
        if isinstance(node, bool):
            return
        unknown = sorted(set(node) - _KEYWORDS)
        if unknown:
            raise SchemaDocumentError(
                f"{where}: unsupported schema keyword(s) {unknown}: not defined by JSON Schema "
                "draft 2020-12 (a misspelt keyword would be ignored, not applied)")
        if "$ref" in node:
            _resolve_local(schema, node["$ref"], where)
        for key in _SCHEMA_MAPS:
            for name, sub in node.get(key, {}).items():
                walk(sub, _pointer(f"{where}/{key}", name))
        for key in _SCHEMA_LISTS:
            for i, sub in enumerate(node.get(key, [])):
                walk(sub, f"{where}/{key}/{i}")
        for key in _SCHEMA_VALUES:
            if key in node:
                walk(node[key], f"{where}/{key}")

    walk(schema, "#")


def _resolve_local(schema: Mapping[str, Any], ref: Any, where: str) -> None:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaDocumentError(f"{where}: only local references ('#/$defs/NAME') are "
                                  f"supported, got {ref!r}")
    node: Any = schema
    for token in ref[1:].split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SchemaDocumentError(f"{where}: $ref {ref!r} names no definition")


@functools.lru_cache(maxsize=8)
def _validator(text: str) -> Any:
    schema = json.loads(text)
    check_schema(schema)
    return _Validator(schema)


def validate(instance: Any, schema: Mapping[str, Any]) -> list[ValidationIssue]:
    """All errors of ``instance`` against ``schema`` (empty when valid), in document order.

    Raises:
        SchemaDocumentError: the schema itself is invalid (see :func:`check_schema`).
    """
    validator = _validator(json.dumps(schema))
    try:
        errors = list(validator.iter_errors(instance))
    except referencing.exceptions.Unresolvable as exc:  # pragma: no cover - check_schema
        raise SchemaDocumentError(f"unresolvable reference: {exc}") from None
    issues: list[ValidationIssue] = []
    for error in errors:
        for issue in _issues(error):
            if issue not in issues:
                issues.append(issue)
    return sorted(issues, key=lambda i: _order(instance, _tokens(i.pointer)))


# --------------------------------------------------------------------------------- messages


def _pointer(base: str, token: Any) -> str:
    text = str(token).replace("~", "~0").replace("/", "~1")
    return f"{base}/{text}"


def _path_pointer(path: Any) -> str:
    return "".join(_pointer("", p) for p in path)


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _order(instance: Any, path: Any) -> tuple[int, ...]:
    """Document order: the position of each path step in the instance (a parent before its
    children, object keys in the order they were written)."""
    out, node = [], instance
    for step in path:
        if isinstance(node, Mapping) and step in node:
            out.append(list(node).index(step))
            node = node[step]
        elif isinstance(node, list) and str(step).isdigit() and int(step) < len(node):
            out.append(int(step))
            node = node[int(step)]
        else:
            out.append(len(node) if isinstance(node, (Mapping, list)) else 0)
            node = None
    return tuple(out)


# JSON Schema's name of a Python value's type; bool before int (a bool is an int)
_TYPE_NAMES = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"),
               (str, "string"), (list, "array"), (Mapping, "object"))


def _type_name(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)),
                type(value).__name__)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _issues(error: Any) -> list[ValidationIssue]:
    """One or more issues for a ``jsonschema`` error, worded by its keyword."""
    ptr = _path_pointer(error.absolute_path)
    keyword, expected, value = error.validator, error.validator_value, error.instance
    if keyword == "additionalProperties" and expected is False:
        schema = error.schema
        allowed = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [k for k in value if k not in allowed
                 and not any(re.search(p, k) for p in patterns)]
        return [ValidationIssue(_pointer(ptr, k), f"unknown key {k!r}; allowed keys are "
                                                  f"{allowed}") for k in extra]
    if keyword == "uniqueItems":
        items = list(value)
        for i, item in enumerate(items):
            if any(_same(item, other) for other in items[:i]):
                return [ValidationIssue(_pointer(ptr, i), f"{_show(item)} is a duplicate; "
                                                          "items must be unique")]
    if keyword in ("oneOf", "anyOf") and error.context:
        branches: dict[int, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        best = min(branches, key=lambda i: (len(branches[i]), i))
        first = min((i for e in branches[best] for i in _issues(e)),
                    key=lambda i: _order(value, _tokens(i.pointer)[len(error.absolute_path):]))
        return [ValidationIssue(first.pointer, f"{first.message} (matches none of the "
                                               f"{keyword} alternatives at {ptr or '/'}; "
                                               f"nearest is #{best})")]
    return [ValidationIssue(ptr, _message(keyword, expected, value, error))]


def _same(a: Any, b: Any) -> bool:
    """JSON equality (booleans are not numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _message(keyword: str, expected: Any, value: Any, error: Any) -> str:
    if keyword == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        return f"expected {' or '.join(types)}, got {_type_name(value)} {_show(value)}"
    if keyword == "const":
        return f"must be {expected!r}, got {_show(value)}"
    if keyword == "enum":
        return f"{_show(value)} is not one of {expected}"
    if keyword == "required":
        return f"missing required key(s) {[k for k in expected if k not in value]}"
    if keyword == "minLength":
        return f"must have at least {expected} character(s)"
    if keyword == "maxLength":
        return f"must have at most {expected} characters, has {len(value)}"
    if keyword == "pattern":
        return f"{_show(value)} does not match {expected!r}"
    if keyword == "minimum":
        return f"{value} is below the minimum {expected}"
    if keyword == "maximum":
        return f"{value} is above the maximum {expected}"
    if keyword == "exclusiveMinimum":
        return f"{value} must be greater than {expected}"
    if keyword == "exclusiveMaximum":
        return f"{value} must be less than {expected}"
    if keyword == "minItems":
        return f"must have at least {expected} item(s), has {len(value)}"
    if keyword == "maxItems":
        return f"must have at most {expected} item(s), has {len(value)}"
    if keyword == "oneOf":
        return f"matches several alternatives of oneOf; exactly one is allowed ({error.message})"
    if error.schema is False:
        return "no value is allowed here"
    return error.message
