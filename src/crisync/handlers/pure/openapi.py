"""Validate Pure API request bodies against the real Pure OpenAPI 3.0 contract.

OpenAPI 3.0 schemas are not quite JSON Schema: ``nullable``, ``readOnly`` and
``discriminator`` need help, and the contract's polymorphism would recurse
forever if taken literally (a subtype is ``allOf: [base, own]`` and the base
carries the discriminator that dispatches back to the subtype). So each
component schema is compiled once into a plain dict that jsonschema's Draft 4
validator walks, with a few extra keywords:

* The ``allOf`` chain is merged into one schema. Its members are taken without
  their discriminator, which is the recursion guard.
* A schema with a discriminator validates the instance against the mapped
  subtype; a value the mapping lacks is an error. Without a value, the
  instance is checked against the base alone.
* A subtype checks that a discriminator value it is given names it (an
  ``OrganizationRef`` whose ``systemName`` is ``Person`` is wrong).
* An object rejects properties the contract does not declare anywhere in its
  ``allOf`` chain. The contract leaves ``additionalProperties`` open, but it
  declares every Pure model property, so an undeclared one is a client bug (a
  typo, or data Pure would not store) that the simulator should surface.
* ``nullable: true`` admits null.
* ``readOnly`` properties are accepted (clients send back what they read) but
  dropped from ``required``; a required property must not be null either.

References are replaced by the compiled dicts themselves (a shared, possibly
cyclic graph) instead of ``$ref``, so validation never resolves a reference.
Valid documents, the common case, are vouched for by plain predicates compiled
alongside (``x-quick``); jsonschema runs only to word the errors of invalid ones.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft4Validator, FormatChecker, ValidationError, validators

CONTRACT_FILE = "pure-api-openapi-2023-08.yaml"
_SCHEMA_REF_PREFIX = "#/components/schemas/"

# The contract is 594 KB; the C loader parses it several times faster.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keywords passed to jsonschema unchanged; everything else (descriptions,
# examples, readOnly, x-extensible-enum, ...) does not constrain a request.
_PLAIN_KEYWORDS = frozenset({"type", "enum", "format", "pattern", "minimum", "maximum", "minItems"})

# Codes for the problem+json ``errors[].code`` of the simulator's own keywords.
_CODES = {
    "x-closed": "unknownProperty",
    "x-discriminator": "unknownSubtype",
    "x-discriminator-value": "wrongSubtype",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})")
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
# The keywords _quick_check can stand in for.
_QUICK_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "minimum",
        "maximum",
        "enum",
        "pattern",
        "minItems",
        "properties",
        "additionalProperties",
        "items",
        "required",
        "x-closed",
        "x-discriminator-value",
    }
)
# Python types of the JSON types, as Draft 4 checks them: a bool is neither an
# integer nor a number, and 1.0 is not an integer.
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


@dataclass(frozen=True)
class Violation:
    """One way a document breaks the contract."""

    path: str  # JSONPath of the offending value, e.g. "$.contributors[0]"
    code: str  # the rule broken, e.g. "required", "type", "unknownProperty"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PureContract:
    """The Pure API contract, with cached validators for its schemas."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._compiler = _Compiler(document["components"]["schemas"])
        self._checks: dict[str, _Check] = {}

    @classmethod
    def load(cls) -> PureContract:
        """The contract shipped with crisync, parsed once per process."""
        return _shipped_contract()

    def request_schema_for(self, method: str, path: str) -> dict[str, Any] | None:
        """The JSON request body schema of an operation, e.g. ``("PUT", "/persons/{uuid}")``."""
        operation = self.document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            return None
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        return None if media is None else dict(media["schema"])

    def validate_request_body(self, method: str, path_template: str, body: object) -> list[str]:
        """Human-readable contract violations of a request body; empty when it is valid."""
        return [
            str(violation) for violation in self.request_violations(method, path_template, body)
        ]

    def request_violations(self, method: str, path_template: str, body: object) -> list[Violation]:
        """The contract violations of a request body, structured."""
        schema = self.request_schema_for(method, path_template)
        if schema is None:
            raise LookupError(f"{method.upper()} {path_template} takes no JSON request body")
        return self.violations(schema, body)

    def violations(self, schema: Mapping[str, Any], instance: Any) -> list[Violation]:
        """Violations of `instance` against a contract schema such as ``{"$ref": ...}``."""
        check = self._check(schema)
        if check.quick is not None and check.quick(instance):
            return []
        found: dict[tuple[str, str], Violation] = {}
        for error in check.validator.iter_errors(instance):
            violation = Violation(
                path=json_path(error.absolute_path),
                code=_CODES.get(str(error.validator), str(error.validator)),
                message=error.message,
            )
            # A subtype and its base can both report one missing property.
            found.setdefault((violation.path, violation.message), violation)
        return list(found.values())

    def property_names(self, schema_name: str) -> frozenset[str]:
        """Every property a component declares, through its ``allOf`` chain."""
        return frozenset(self._compiler.declared(self._compiler.raw(schema_name)))

    def read_only_properties(self, schema_name: str) -> frozenset[str]:
        """The declared properties of a component that only the server writes."""
        declared = self._compiler.declared(self._compiler.raw(schema_name))
        return frozenset(name for name, raw in declared.items() if self._compiler.read_only(raw))

    def _check(self, schema: Mapping[str, Any]) -> _Check:
        key = json.dumps(schema, sort_keys=True)
        check = self._checks.get(key)
        if check is None:
            compiled = self._compiler.inline(schema)
            check = _Check(
                validator=_OpenApiValidator(compiled, format_checker=_FORMATS),
                quick=compiled.get("x-quick"),
            )
            self._checks[key] = check
        return check


@dataclass(frozen=True)
class _Check:
    """A compiled schema: its quick predicate, if any, and the validator that words errors."""

    validator: Any  # a jsonschema validator of the class _OpenApiValidator
    quick: Callable[[object], bool] | None


@functools.cache
def _shipped_contract() -> PureContract:
    data = (
        resources.files("crisync.handlers.pure").joinpath("contracts", CONTRACT_FILE).read_bytes()
    )
    return PureContract(yaml.load(data, Loader=_YAML_LOADER))  # noqa: S506 - a safe loader


class _Compiler:
    """Turns OpenAPI component schemas into the validator's dict graph (see module doc)."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self._schemas = schemas
        self._compiled: dict[str, dict[str, Any]] = {}
        # subtype name -> (discriminator property, the values that select it)
        self._selectors: dict[str, tuple[str, set[str]]] = {}
        for raw in schemas.values():
            discriminator = raw.get("discriminator")
            if discriminator is None:
                continue
            for value, ref in discriminator["mapping"].items():
                selector = self._selectors.setdefault(
                    _ref_name(ref), (discriminator["propertyName"], set())
                )
                selector[1].add(value)

    def raw(self, name: str) -> Mapping[str, Any]:
        return self._schemas[name]  # type: ignore[no-any-return]

    def component(self, name: str) -> dict[str, Any]:
        compiled = self._compiled.get(name)
        if compiled is not None:
            return compiled
        # Registered before it is filled so that cycles refer to this very dict.
        compiled = self._compiled[name] = {}
        raw = self.raw(name)
        discriminator = raw.get("discriminator")
        if discriminator is None:
            compiled.update(self._flatten(raw, name=name, closed=True))
            return compiled
        spec = {
            "property": discriminator["propertyName"],
            "schema": name,
            "nullable": raw.get("nullable", False),
            "mapping": {
                value: self.component(_ref_name(ref))
                for value, ref in discriminator["mapping"].items()
            },
            # Without a value the subtype is unknown: check what the base demands.
            "untyped": self._flatten(raw, name=None, closed=False),
        }
        compiled["x-discriminator"] = spec
        compiled["x-quick"] = _quick_dispatch(spec)
        return compiled

    def inline(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        if "$ref" in raw:  # OpenAPI 3.0 ignores the siblings of $ref
            return self.component(_ref_name(raw["$ref"]))
        return self._flatten(raw, name=None, closed=True)

    def declared(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The properties of a schema and of its ``allOf`` members, raw."""
        properties: dict[str, Any] = {}
        for member in self._chain(raw):
            properties.update(member.get("properties", {}))
        return properties

    def read_only(self, raw: Mapping[str, Any]) -> bool:
        return bool(self._target(raw).get("readOnly", False))

    def _target(self, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.raw(_ref_name(raw["$ref"])) if "$ref" in raw else raw

    def _chain(self, raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """A schema and, recursively, its ``allOf`` members, bases first.

        Members are taken without their discriminator: this is what stops a
        subtype's ``allOf`` back to its base from dispatching to the subtype again.
        """
        chain: list[Mapping[str, Any]] = []
        for member in raw.get("allOf", ()):
            chain.extend(self._chain(self._target(member)))
        chain.append(raw)
        return chain

    def _flatten(self, raw: Mapping[str, Any], *, name: str | None, closed: bool) -> dict[str, Any]:
        """One schema with the keywords of the whole ``allOf`` chain merged.

        Merging instead of validating each member separately saves most of
        jsonschema's per-subschema cost. The contract's members never declare
        one property twice, so the merge loses nothing. `name` is the
        component's, if it is one; `closed` rejects undeclared properties,
        which a base checked without knowing its subtype must not do.
        """
        declared = self.declared(raw)
        out: dict[str, Any] = {}
        required: list[str] = []
        for member in self._chain(raw):
            required.extend(prop for prop in member.get("required", ()) if prop not in required)
            out.update((key, value) for key, value in member.items() if key in _PLAIN_KEYWORDS)
            for key in ("items", "additionalProperties"):
                value = member.get(key)
                if value is not None:
                    out[key] = self.inline(value) if isinstance(value, dict) else value
        # readOnly properties are tolerated in a request, never demanded.
        required = [p for p in required if not (p in declared and self.read_only(declared[p]))]
        if required:
            out["required"] = required
        if declared:
            out["properties"] = {prop: self.inline(schema) for prop, schema in declared.items()}
        open_ended = not declared or "additionalProperties" in out
        if closed and out.get("type", "object") == "object" and not open_ended:
            out["x-closed"] = {"schema": name or "this object", "known": frozenset(declared)}
        if raw.get("nullable", False):
            # Every other keyword ignores null, so admitting it to the type
            # (and the enum) is all that nullable takes.
            if "type" in out:
                out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if name is not None and name in self._selectors:
            prop, values = self._selectors[name]
            out["x-discriminator-value"] = {"property": prop, "allowed": frozenset(values)}
        quick = _quick_check(out)
        if quick is not None:
            out["x-quick"] = quick
        return out


def _ref_name(ref: str) -> str:
    if not ref.startswith(_SCHEMA_REF_PREFIX):
        raise ValueError(f"unsupported reference {ref!r}")
    return ref[len(_SCHEMA_REF_PREFIX) :]


def json_path(parts: Iterable[str | int]) -> str:
    """A JSONPath such as ``$.contributors[0].name`` or ``$.customDefinedFields["a-b"]``."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _quick_check(schema: Mapping[str, Any]) -> Callable[[object], bool] | None:
    """A plain predicate for a simple schema, or None when the schema is not simple.

    Most values in a body are scalars, or small objects and lists of scalars
    such as content references and classifications; testing them directly
    skips jsonschema's per-subschema setup, which dominates validation time.
    A predicate only ever vouches for valid values: when it says no,
    jsonschema runs as usual and words the error.
    """
    if not schema.keys() <= _QUICK_KEYWORDS:
        return None
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    python_types = tuple(python for kind in kinds for python in _TYPES[kind])
    bool_allowed = "boolean" in kinds
    subschemas = dict(schema.get("properties", {}))
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            subschemas[keyword] = schema[keyword]
    checks = {key: sub["x-quick"] for key, sub in subschemas.items() if "x-quick" in sub}
    if not kinds or len(checks) < len(subschemas):
        return None
    item_check = checks.pop("items", None)
    extra_check = checks.pop("additionalProperties", None)
    fmt = schema.get("format")
    low = schema.get("minimum")
    high = schema.get("maximum")
    min_items = schema.get("minItems", 0)
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    # Compared with their types because 1 == True in Python but not in JSON.
    enum = None if "enum" not in schema else {(type(v), v) for v in schema["enum"]}
    required = schema.get("required", ())
    known = schema["x-closed"]["known"] if "x-closed" in schema else None
    selector = schema.get("x-discriminator-value")

    def quick_object(value: dict[str, Any]) -> bool:
        if any(value.get(prop) is None for prop in required):
            return False
        if known is not None and not value.keys() <= known:
            return False
        if selector is not None and not _selects(value, selector):
            return False
        for prop, item in value.items():
            check = checks.get(prop, extra_check)
            if check is not None and not check(item):
                return False
        return True

    def quick_scalar(value: object) -> bool:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        elif isinstance(value, str) and pattern is not None and pattern.search(value) is None:
            return False
        return fmt is None or _FORMATS.conforms(value, fmt)

    def quick(value: object) -> bool:
        if not isinstance(value, python_types) or (isinstance(value, bool) and not bool_allowed):
            return False
        if isinstance(value, dict):
            return enum is None and quick_object(value)
        if isinstance(value, list):
            return (
                enum is None
                and len(value) >= min_items
                and (item_check is None or all(item_check(item) for item in value))
            )
        return (enum is None or (type(value), value) in enum) and quick_scalar(value)

    return quick


def _quick_dispatch(spec: Mapping[str, Any]) -> Callable[[object], bool]:
    """The quick check of a discriminated schema: that of the subtype the value names.

    The subtype's check is looked up on each call because, in a cycle, the
    subtype may still be compiling when its base is.
    """
    prop = spec["property"]
    mapping = spec["mapping"]
    nullable = spec["nullable"]

    def quick(value: object) -> bool:
        if value is None:
            return bool(nullable)
        if not isinstance(value, dict) or not isinstance(value.get(prop), str):
            return False
        check = mapping.get(value[prop], {}).get("x-quick")
        return check is not None and bool(check(value))

    return quick


def _required(
    validator: Any, required: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        return
    for prop in required:
        if prop not in instance:
            yield ValidationError(f"{prop!r} is a required property")
        elif instance[prop] is None:
            # Nullable types are still mandatory where required: Pure needs a value.
            yield ValidationError(f"{prop!r} is required and must not be null", path=(prop,))


def _closed(validator: Any, spec: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        return
    for prop in instance:
        if prop not in spec["known"]:
            yield ValidationError(
                f"{prop!r} is not a property of {spec['schema']} in the contract", path=(prop,)
            )


def _discriminator(
    validator: Any, spec: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if instance is None and spec["nullable"]:
        return
    prop = spec["property"]
    if not isinstance(instance, dict) or prop not in instance:
        yield from validator.descend(instance, spec["untyped"])
        return
    value = instance[prop]
    subtype = spec["mapping"].get(value) if isinstance(value, str) else None
    if subtype is None:
        yield ValidationError(
            f"{value!r} is not a {spec['schema']} {prop};"
            f" expected one of {sorted(spec['mapping'])}",
            path=(prop,),
        )
        return
    yield from validator.descend(instance, subtype)


def _selects(instance: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether an object's discriminator value, if it has one, names the subtype of `spec`."""
    prop = spec["property"]
    if prop not in instance:
        return True
    value = instance[prop]
    return isinstance(value, str) and value in spec["allowed"]


def _discriminator_value(
    validator: Any, spec: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    prop = spec["property"]
    if isinstance(instance, dict) and not _selects(instance, spec):
        yield ValidationError(
            f"{instance[prop]!r} does not belong here; expected one of {sorted(spec['allowed'])}",
            path=(prop,),
        )


# Draft 4 is the JSON Schema that OpenAPI 3.0 extends. The compiled schemas hold
# no $ref and no ids, so the defaults for finding those do not matter.
_OpenApiValidator = validators.create(
    meta_schema=Draft4Validator.META_SCHEMA,
    validators={
        **Draft4Validator.VALIDATORS,
        "required": _required,
        "x-closed": _closed,
        "x-discriminator": _discriminator,
        "x-discriminator-value": _discriminator_value,
    },
    type_checker=Draft4Validator.TYPE_CHECKER,
)

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("uuid")
def _is_uuid(instance: object) -> bool:
    return not isinstance(instance, str) or _UUID.fullmatch(instance) is not None


@_FORMATS.checks("date", raises=ValueError)
def _is_date(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    return _DATE.fullmatch(instance) is not None and date.fromisoformat(instance) is not None


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    return _DATE_TIME.fullmatch(instance) is not None and bool(datetime.fromisoformat(instance))


@_FORMATS.checks("int32")
def _is_int32(instance: object) -> bool:
    return not isinstance(instance, int) or instance in _INT32


@_FORMATS.checks("int64")
def _is_int64(instance: object) -> bool:
    return not isinstance(instance, int) or instance in _INT64
