"""``gyoza op build``: build an op's image with the op SDK added to its build context (docker SDK, legacy builder).

The context is sent as a tar built here: the files of ``build.context`` that ``.dockerignore`` keeps, plus
``gyoza/__init__.py`` and ``gyoza/op/*.py`` (standard library only), so a Dockerfile can ``COPY gyoza /app/gyoza``
and the image needs no pip. Nothing is written into the user's directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.utils.build import create_archive, exclude_paths

from gyoza.opfile.model import OpFile

SDK_FOLDER = "gyoza"
BASE_IMAGE_ARG = "BASE_IMAGE"
BASE_IMAGE_ENV = "GYOZA_BASE_IMAGE"
BUILD_NETWORK_ENV = "GYOZA_BUILD_NETWORK"


class BuildError(Exception):
    """The image could not be built; the message says why (and what to do when we can tell)."""


@dataclass(frozen=True)
class BuildOptions:
    base_image: str | None = None  # explicit --base-image; GYOZA_BASE_IMAGE is read when this is None
    network: str | None = None  # explicit --network; GYOZA_BUILD_NETWORK is read when this is None
    no_cache: bool = False

    def resolved_base_image(self) -> str | None:
        return self.base_image or os.environ.get(BASE_IMAGE_ENV) or None

    def resolved_network(self) -> str | None:
        return self.network or os.environ.get(BUILD_NETWORK_ENV) or None


def sdk_files() -> list[tuple[str, str]]:
    """The op SDK as (path in the context, text): ``gyoza/__init__.py`` and ``gyoza/op/*.py``."""
    package = resources.files("gyoza")
    files = [(f"{SDK_FOLDER}/__init__.py", package.joinpath("__init__.py").read_text(encoding="utf-8"))]
    op_package = package.joinpath("op")
    for entry in sorted(op_package.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".py"):
            files.append((f"{SDK_FOLDER}/op/{entry.name}", entry.read_text(encoding="utf-8")))
    return files


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_archive(opfile: OpFile) -> tuple[IO[bytes], str]:
    """The build context as a tar (with the SDK added) and the Dockerfile's path inside it."""
    context, dockerfile = opfile.context_dir, opfile.dockerfile
    if not context.is_dir():
        raise BuildError(f"build.context: {context} is not a directory")
    if not dockerfile.is_file():
        raise BuildError(f"build.dockerfile: {dockerfile} not found")
    extra = sdk_files()
    if dockerfile.is_relative_to(context):
        dockerfile_name = dockerfile.relative_to(context).as_posix()
    else:  # a Dockerfile outside the context travels inside the tar, as `docker build -f` does
        dockerfile_name = ".gyoza.Dockerfile"
        extra.append((dockerfile_name, dockerfile.read_text(encoding="utf-8")))
    files = sorted(exclude_paths(str(context), _dockerignore(context), dockerfile=dockerfile_name))
    clashing = [name for name in files if name == SDK_FOLDER or name.startswith(f"{SDK_FOLDER}/")]
    if clashing:
        raise BuildError(
            f"the build context {context} already has a {SDK_FOLDER}/ folder, where the op SDK goes: "
            f"rename it or list it in .dockerignore"
        )
    return create_archive(str(context), files=files, extra_files=extra), dockerfile_name


def build_args(opfile: OpFile, options: BuildOptions) -> dict[str, str]:
    args = opfile.build_args()
    base_image = options.resolved_base_image()
    if base_image:
        args[BASE_IMAGE_ARG] = base_image
    return args


def build_image(opfile: OpFile, options: BuildOptions, echo: Callable[[str], None]) -> str:
    """Build and tag ``opfile.image``; ``echo`` gets the builder's output as it comes. Returns the image id."""
    archive, dockerfile_name = context_archive(opfile)
    args = build_args(opfile, options)
    try:
        client = docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise BuildError(f"cannot reach the Docker engine: {exc}") from None
    try:
        with archive:
            stream = client.api.build(
                fileobj=archive, custom_context=True, dockerfile=dockerfile_name, tag=opfile.image, buildargs=args,
                nocache=options.no_cache, rm=True, forcerm=True, network_mode=options.resolved_network(),
                labels={"gyoza.op": opfile.name, "gyoza.version": opfile.version}, decode=True,
            )  # fmt: skip
            _follow(stream, echo)
        return str(client.images.get(opfile.image).id)
    except docker.errors.DockerException as exc:
        raise BuildError(f"docker build failed: {exc}") from None
    finally:
        client.close()


def local_image_id(image: str) -> str | None:
    """The id of ``image`` on this machine's engine, or None when it is absent (or no engine answers)."""
    try:
        client = docker.from_env(timeout=30)
    except docker.errors.DockerException:
        return None
    try:
        return str(client.images.get(image).id)
    except docker.errors.DockerException:
        return None
    finally:
        client.close()


def _follow(stream: Any, echo: Callable[[str], None]) -> None:
    for chunk in stream:
        if "stream" in chunk:
            text = str(chunk["stream"]).rstrip("\n")
            if text.strip():
                echo(text)
        elif "error" in chunk:
            raise BuildError(f"docker build failed: {str(chunk['error']).strip()}{_hint(str(chunk['error']))}")


def _hint(error: str) -> str:
    lowered = error.lower()
    if any(word in lowered for word in ("pull access denied", "manifest", "registry", "dial tcp", "no such host")):
        return (
            f"\nthe base image could not be pulled: pass --base-image IMG (or set {BASE_IMAGE_ENV}) to an image this "
            "machine has or can pull"
        )
    return ""
