"""Check values against input/output specs (SPEC §2.4), listing every problem rather than the first."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from gyoza.schema import FailureReason, InputSpec, OutputSpec, ValueType

Problem = dict[str, str]

_JSON_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    dict: "object",
    list: "array",
    type(None): "null",
}


def json_type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


# JSON's booleans are not numbers here, and a float input accepts integers (SPEC §2.4).
_TYPE_CHECKS: dict[ValueType, Callable[[Any], bool]] = {
    ValueType.STRING: lambda v: isinstance(v, str),
    ValueType.INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
    ValueType.FLOAT: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    ValueType.BOOL: lambda v: isinstance(v, bool),
    ValueType.OBJECT: lambda v: isinstance(v, dict),
    ValueType.ARRAY: lambda v: isinstance(v, list),
    ValueType.ANY: lambda v: True,
}


def type_problem(value: Any, expected: ValueType) -> str | None:
    """Why ``value`` is not of ``expected`` type, or None."""
    if _TYPE_CHECKS[expected](value):
        return None
    return f"expected {expected.value}, got {json_type_name(value)}"


def _range_problems(value: Any, spec: InputSpec) -> list[str]:
    problems = []
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"must be one of {spec.choices!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            problems.append(f"must be >= {spec.min:g}")
        if spec.max is not None and value > spec.max:
            problems.append(f"must be <= {spec.max:g}")
    return problems


def check_value(value: Any, spec: InputSpec) -> list[str]:
    problem = type_problem(value, spec.type)
    return [problem] if problem else _range_problems(value, spec)


def spec_problems(specs: Mapping[str, InputSpec], prefix: str = "input_specs") -> list[Problem]:
    """Problems of a definition's own input specs: defaults must satisfy their spec, ranges must make sense."""
    problems: list[Problem] = []
    for name, spec in specs.items():
        field = f"{prefix}.{name}"
        if spec.default is not None:
            problems += [{"field": f"{field}.default", "problem": p} for p in check_value(spec.default, spec)]
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            problems.append({"field": f"{field}.min", "problem": "must be <= max"})
    return problems


def resolve_inputs(inputs: Mapping[str, Any], specs: Mapping[str, InputSpec]) -> tuple[dict[str, Any], list[Problem]]:
    """Fill defaults and list every problem: unknown names, missing required inputs, wrong types, ranges."""
    problems: list[Problem] = [
        {"field": f"inputs.{name}", "problem": "unknown input"} for name in inputs if name not in specs
    ]
    resolved: dict[str, Any] = {}
    for name, spec in specs.items():
        field = f"inputs.{name}"
        if name not in inputs or inputs[name] is None:
            if spec.default is not None:
                resolved[name] = spec.default
            elif spec.required:
                problems.append({"field": field, "problem": "required input is missing"})
            continue
        value = inputs[name]
        problems += [{"field": field, "problem": p} for p in check_value(value, spec)]
        resolved[name] = value
    return resolved, problems


def output_problems(outputs: Mapping[str, Any], specs: Mapping[str, OutputSpec]) -> list[Problem]:
    """Problems of an op's outputs against its output specs (unknown extra outputs are allowed)."""
    return [problem for problem, _ in _checked_outputs(outputs, specs)]


def output_failure(outputs: Mapping[str, Any], specs: Mapping[str, OutputSpec]) -> tuple[FailureReason, str] | None:
    """Why outputs fail their specs, as the attempt's failure: ``OUTPUT_MISSING`` when every problem is a required
    output left out, else ``OUTPUT_INVALID``, with the message; None when they pass."""
    checked = _checked_outputs(outputs, specs)
    if not checked:
        return None
    reason = FailureReason.OUTPUT_MISSING if all(missing for _, missing in checked) else FailureReason.OUTPUT_INVALID
    summary = "; ".join(f"{problem['field']}: {problem['problem']}" for problem, _ in checked)
    return reason, f"outputs do not match output_specs: {summary}"


def _checked_outputs(outputs: Mapping[str, Any], specs: Mapping[str, OutputSpec]) -> list[tuple[Problem, bool]]:
    """Each problem, in spec order, with whether it is a required output that is missing."""
    problems: list[tuple[Problem, bool]] = []
    for name, spec in specs.items():
        field = f"outputs.{name}"
        if name not in outputs:
            if spec.required:
                problems.append(({"field": field, "problem": "required output is missing"}, True))
            continue
        problem = type_problem(outputs[name], spec.type)
        if problem:
            problems.append(({"field": field, "problem": problem}, False))
    return problems
