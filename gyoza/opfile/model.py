"""What a gyoza.yml holds: an op definition (the POST /definitions body) plus how to build its image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from gyoza.schema import Input, OpDefinition, OpDefinitionIn

OPFILE_NAME = "gyoza.yml"

BuildArg = str | int | float | bool


class BuildSpec(Input):
    """``build:`` in gyoza.yml. Paths are relative to the directory holding gyoza.yml."""

    context: Annotated[str, Field(min_length=1)] = "."
    dockerfile: Annotated[str, Field(min_length=1)] = "Dockerfile"
    # YAML readily turns ``3.12`` or ``true`` into numbers and booleans: build args accept scalars, sent as text.
    args: dict[str, BuildArg] = Field(default_factory=dict)


def default_image(name: str, version: str) -> str:
    """The image tag of an op whose gyoza.yml names none (SPEC §8)."""
    return f"gyoza/{name}:{version}"


@dataclass(frozen=True)
class OpFile:
    """A loaded, valid gyoza.yml."""

    path: Path
    definition: OpDefinitionIn
    build: BuildSpec

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def version(self) -> str:
        return self.definition.version

    @property
    def image(self) -> str:
        return self.definition.image

    @property
    def context_dir(self) -> Path:
        return (self.root / self.build.context).resolve()

    @property
    def dockerfile(self) -> Path:
        return (self.root / self.build.dockerfile).resolve()

    def build_args(self) -> dict[str, str]:
        return {key: _arg_text(value) for key, value in self.build.args.items()}

    def same_content(self, stored: OpDefinition) -> bool:
        """Whether deploying this file would be an identical re-post of ``stored`` (the server's own comparison)."""
        mine = OpDefinition(id=self.name, created_at=stored.created_at, **self.definition.model_dump())
        return mine.content() == stored.content()


def _arg_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
