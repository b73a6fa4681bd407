"""gyoza.yml validation (SPEC §8) as a user meets it: one clear message per problem, naming the field, every problem
at once, before any command does anything. No Docker and no server needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cliproc import gyoza_offline as gyoza
from tests.cliproc import stderr_lines

VALID_HEAD = "name: sample\nversion: 1.0.0\n"

INVALID_FILES = {
    "missing name": ("version: 1.0.0\n", ["gyoza.yml: name: required field is missing"]),
    "unknown input type": (
        VALID_HEAD + "input_specs:\n  top_k: {type: integer}\n",
        [
            "gyoza.yml: input_specs.top_k.type: unknown type 'integer' "
            "(expected one of string, int, float, bool, object, array, any)"
        ],
    ),
    "bad version string": (
        "name: sample\nversion: v 1\n",
        [
            "gyoza.yml: version: must be letters, digits, '.', '_', '+' or '-', start with a letter or digit "
            "(e.g. 1.0.0), got 'v 1'"
        ],
    ),
    "version YAML reads as a number": (
        "name: sample\nversion: 1.0\n",
        [
            "gyoza.yml: version: expected a string, got number 1.0 "
            '(quote it so YAML reads it as text, e.g. version: "1.0")'
        ],
    ),
    "negative cpu": (VALID_HEAD + "constraints: {cpu: -1}\n", ["gyoza.yml: constraints.cpu: must be >= 0, got -1"]),
    "ram as a string": (
        VALID_HEAD + "constraints: {ram_mb: 4GB}\n",
        [
            "gyoza.yml: constraints.ram_mb: expected an integer, got string '4GB' "
            "(megabytes as a number, e.g. ram_mb: 4096)"
        ],
    ),
    "misspelt field": (
        VALID_HEAD + "input_spec: {}\n",
        ["gyoza.yml: input_spec: unknown field (did you mean 'input_specs'?)"],
    ),
    "default outside its spec": (
        VALID_HEAD + "input_specs:\n  n: {type: int, default: many}\n",
        ["gyoza.yml: input_specs.n.default: expected int, got string"],
    ),
    "YAML syntax": (
        "name: sample\nversion: [1\n",
        ["gyoza.yml: line 3, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID_FILES), ids=list(INVALID_FILES))
def test_an_invalid_gyoza_yml_gets_one_clear_message_naming_the_field(case: str, tmp_path: Path) -> None:
    text, expected = INVALID_FILES[case]
    (tmp_path / "gyoza.yml").write_text(text)
    result = gyoza("deploy", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert stderr_lines(result) == expected
    assert result.stdout == ""


def test_every_problem_is_listed_at_once_and_every_command_validates_first(tmp_path: Path) -> None:
    (tmp_path / "gyoza.yml").write_text(
        "name: Sample Op\nversion: 1.0.0\nconstraints: {cpu: -2, ram_mb: 4GB}\nbuild: {contxt: src}\n"
    )
    expected = [
        "gyoza.yml: build.contxt: unknown field (did you mean 'context'?)",
        "gyoza.yml: constraints.cpu: must be >= 0, got -2",
        "gyoza.yml: constraints.ram_mb: expected an integer, got string '4GB' "
        "(megabytes as a number, e.g. ram_mb: 4096)",
        "gyoza.yml: name: must be lowercase letters, digits, '-' or '_', start with a letter or digit, at most 63 "
        "characters, got 'Sample Op'",
    ]
    for command in (["deploy"], ["op", "build"], ["op", "test", "-i", "x=1"]):
        result = gyoza(*command, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert stderr_lines(result) == expected, command


def test_a_missing_gyoza_yml_says_how_to_create_one(tmp_path: Path) -> None:
    result = gyoza("op", "build", cwd=tmp_path)
    assert result.returncode == 2
    assert stderr_lines(result) == ["gyoza.yml: not found (create one with `gyoza op init NAME`)"]
