"""Read and validate gyoza.yml, reporting every problem as ``gyoza.yml: <field path>: <what is wrong>``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gyoza.core.specs import spec_problems
from gyoza.errors import InvalidRequest
from gyoza.opfile.messages import describe_error
from gyoza.opfile.model import OPFILE_NAME, BuildSpec, OpFile, default_image
from gyoza.schema import OpDefinitionIn

# Stands in for a missing ``image`` while validating, so that problems only ever name fields the user wrote.
_PLACEHOLDER_IMAGE = "gyoza/placeholder:0"


class OpFileError(Exception):
    """gyoza.yml is missing or invalid; ``problems`` holds one line per problem, without the file name."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        label = display_path(self.path)
        return [f"{label}: {problem}" for problem in self.problems]


def display_path(path: Path) -> str:
    """``path`` as the user would type it from here: relative when below the working directory."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def find_opfile(path: Path | None = None) -> Path:
    """The gyoza.yml to use: ``path`` (a file or a directory holding one), default the working directory's."""
    path = Path.cwd() if path is None else path
    return path / OPFILE_NAME if path.is_dir() else path


def load_opfile(path: Path | None = None) -> OpFile:
    path = find_opfile(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OpFileError(path, ["not found (create one with `gyoza op init NAME`)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OpFileError(path, [f"cannot be read: {exc}"]) from None
    return parse_opfile(text, path)


def parse_opfile(text: str, path: Path) -> OpFile:
    data = _read_yaml(text, path)
    raw_build = data.pop("build", None)
    problems: list[str] = []
    build = BuildSpec()
    if raw_build is not None:
        try:
            build = BuildSpec.model_validate_json(_as_json(raw_build))
        except ValidationError as exc:
            problems += [describe_error(error, prefix=("build",)) for error in exc.errors()]
    image_given = data.get("image") is not None
    if not image_given:
        data["image"] = _PLACEHOLDER_IMAGE
    try:
        # Through JSON, exactly as the server validates a POST body (strict types, enums from their values).
        definition = OpDefinitionIn.model_validate_json(_as_json(data))
    except ValidationError as exc:
        problems += [describe_error(error) for error in exc.errors()]
        raise OpFileError(path, problems) from None
    except InvalidRequest as exc:  # a rule across fields (a name both in env and in secrets)
        problems += [f"{p['field']}: {p['problem']}" for p in exc.details]
        raise OpFileError(path, problems) from None
    problems += [f"{p['field']}: {p['problem']}" for p in spec_problems(definition.input_specs)]
    if problems:
        raise OpFileError(path, problems)
    if not image_given:
        definition = definition.model_copy(update={"image": default_image(definition.name, definition.version)})
    return OpFile(path=path.resolve(), definition=definition, build=build)


def _read_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise OpFileError(path, [f"{where}invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise OpFileError(path, [f"invalid YAML: {exc}"]) from None
    if data is None:
        raise OpFileError(path, ["is empty (it needs at least name and version)"])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise OpFileError(path, [f"must be a mapping of fields (name, version, input_specs, ...), got {kind}"])
    return data


def _as_json(data: Any) -> str:
    # YAML can yield dates and timestamps, which JSON cannot: they travel as text, as they would over HTTP.
    return json.dumps(data, default=str)
