"""Input and output spec checks list every problem, fill defaults and refuse unknown names."""

from gyoza.core.specs import output_problems, resolve_inputs, spec_problems
from gyoza.schema import InputSpec, OutputSpec, ValueType

SPECS = {
    "image_url": InputSpec(type=ValueType.STRING),
    "top_k": InputSpec(type=ValueType.INT, required=False, default=5, min=1, max=100),
    "threshold": InputSpec(type=ValueType.FLOAT, required=False, default=0.5),
    "mode": InputSpec(type=ValueType.STRING, required=False, default="fast", choices=["fast", "exact"]),
    "labels": InputSpec(type=ValueType.ARRAY, required=False),
}


def test_defaults_fill_missing_optional_inputs() -> None:
    resolved, problems = resolve_inputs({"image_url": "s3://a.png"}, SPECS)
    assert problems == []
    assert resolved == {"image_url": "s3://a.png", "top_k": 5, "threshold": 0.5, "mode": "fast"}


def test_every_problem_is_listed() -> None:
    _, problems = resolve_inputs({"top_k": True, "threshold": "high", "mode": "slow", "colour": "red"}, SPECS)
    assert {(p["field"], p["problem"]) for p in problems} == {
        ("inputs.colour", "unknown input"),
        ("inputs.image_url", "required input is missing"),
        ("inputs.top_k", "expected int, got bool"),
        ("inputs.threshold", "expected float, got string"),
        ("inputs.mode", "must be one of ['fast', 'exact']"),
    }


def test_int_is_a_float_but_not_the_reverse() -> None:
    _, ok = resolve_inputs({"image_url": "x", "threshold": 1}, SPECS)
    _, bad = resolve_inputs({"image_url": "x", "top_k": 2.5}, SPECS)
    assert ok == []
    assert bad == [{"field": "inputs.top_k", "problem": "expected int, got float"}]


def test_ranges_are_checked() -> None:
    _, problems = resolve_inputs({"image_url": "x", "top_k": 0}, SPECS)
    assert problems == [{"field": "inputs.top_k", "problem": "must be >= 1"}]


def test_a_default_that_breaks_its_own_spec_is_a_spec_problem() -> None:
    problems = spec_problems({"k": InputSpec(type=ValueType.INT, default="three", required=False)})
    assert problems == [{"field": "input_specs.k.default", "problem": "expected int, got string"}]


def test_outputs_are_checked_against_output_specs() -> None:
    specs = {"label": OutputSpec(type=ValueType.STRING), "extra": OutputSpec(type=ValueType.OBJECT, required=False)}
    assert output_problems({"label": "cat", "anything": 1}, specs) == []
    assert output_problems({"extra": []}, specs) == [
        {"field": "outputs.label", "problem": "required output is missing"},
        {"field": "outputs.extra", "problem": "expected object, got array"},
    ]
