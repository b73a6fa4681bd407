"""``gyoza op init``: write a working op (gyoza.yml, main.py, Dockerfile, an example input) from the templates."""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from gyoza.schema import NAME_PATTERN

# template file -> where it goes in the new op's directory
TEMPLATES = {
    "gyoza.yml.tmpl": "gyoza.yml",
    "main.py.tmpl": "main.py",
    "Dockerfile.tmpl": "Dockerfile",
    "dockerignore.tmpl": ".dockerignore",
    "inputs.json.tmpl": "examples/inputs.json",
}


class ScaffoldError(Exception):
    """The op cannot be created (bad name, or it would overwrite files)."""


def function_name(op_name: str) -> str:
    """A Python identifier for the op's function: ``image-resize`` -> ``image_resize``, ``3d`` -> ``op_3d``."""
    name = op_name.replace("-", "_")
    if name[:1].isdigit():
        name = f"op_{name}"
    return f"{name}_op" if keyword.iskeyword(name) else name


def render(template: str, op_name: str) -> str:
    text = resources.files("gyoza.opfile").joinpath("templates", template).read_text(encoding="utf-8")
    return text.replace("{{name}}", op_name).replace("{{function}}", function_name(op_name))


def scaffold(op_name: str, directory: Path) -> list[Path]:
    """Create the op's files in ``directory`` (created if needed); refuse to overwrite any of them."""
    if not re.fullmatch(NAME_PATTERN, op_name):
        raise ScaffoldError(
            f"invalid op name {op_name!r}: use lowercase letters, digits, '-' or '_', starting with a letter or "
            "digit (at most 63 characters)"
        )
    targets = {template: directory / relative for template, relative in TEMPLATES.items()}
    existing = [path for path in targets.values() if path.exists()]
    if existing:
        listed = ", ".join(str(path) for path in existing)
        raise ScaffoldError(f"not overwriting existing files: {listed}")
    for template, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(template, op_name), encoding="utf-8")
    return list(targets.values())
