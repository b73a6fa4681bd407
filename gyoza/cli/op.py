"""``gyoza op init|build|test`` and ``gyoza deploy``: the gyoza.yml op workflow (SPEC §8).

Exit codes (as for every ``gyoza`` command, see gyoza/cli/errors.py): 0 done; 1 the build or the container failed;
2 gyoza.yml or the command line is wrong; 3 the server said no or could not be reached — including a version that
is already deployed with different content (bump it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gyoza.opfile import OpFile, OpFileError, display_path, load_opfile

app = typer.Typer(no_args_is_help=True, help="Scaffold, build and test ops described by gyoza.yml.")

EXIT_FAILED, EXIT_INVALID, EXIT_VERSION_TAKEN = 1, 2, 3

# No short flag: across the CLI -f means --follow (as in tail -f).
FileOption = Annotated[
    Path | None, typer.Option("--file", help="gyoza.yml to use, or its directory [default: ./gyoza.yml]")
]
BaseImageOption = Annotated[
    str | None,
    typer.Option(help="Base image for the Dockerfile's BASE_IMAGE build arg [env GYOZA_BASE_IMAGE]"),
]
BuildNetworkOption = Annotated[
    str | None, typer.Option("--network", help="Network for the build's RUN steps [env GYOZA_BUILD_NETWORK]")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Build without Docker's layer cache")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Show the build output only when it fails")]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


def load(path: Path | None) -> OpFile:
    try:
        return load_opfile(path)
    except OpFileError as exc:
        for line in exc.lines():
            typer.secho(line, fg="red", err=True)
        raise typer.Exit(EXIT_INVALID) from None


@app.command("init")
def init(
    name: Annotated[str, typer.Argument(help="The op's name: lowercase letters, digits, '-' and '_'")],
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to create it [default: ./NAME]")] = None,
) -> None:
    """Create a working op: gyoza.yml, main.py, Dockerfile and examples/inputs.json."""
    from gyoza.opfile.scaffold import ScaffoldError, scaffold

    target = directory if directory is not None else Path(name)
    try:
        created = scaffold(name, target)
    except ScaffoldError as exc:
        fail(str(exc), EXIT_INVALID)
    typer.echo(f"Created {name} in {display_path(target.resolve())}/:")
    for path in created:
        typer.echo(f"  {path.relative_to(target).as_posix()}")
    steps = [] if target.resolve() == Path.cwd() else [f"cd {shlex.quote(str(target))}"]
    steps += ["gyoza op build", "gyoza op test --inputs-file examples/inputs.json", "gyoza deploy"]
    typer.echo("Next:\n" + "\n".join(f"  {step}" for step in steps))


def _build(opfile: OpFile, base_image: str | None, network: str | None, no_cache: bool, quiet: bool) -> str:
    from gyoza.opfile.build import BuildError, BuildOptions, build_image

    output: list[str] = []

    def echo(line: str) -> None:
        if quiet:
            output.append(line)
        else:
            typer.echo(line, err=True)

    typer.echo(f"Building {opfile.image} ...", err=True)
    try:
        image_id = build_image(opfile, BuildOptions(base_image, network, no_cache), echo)
    except BuildError as exc:
        for line in output:
            typer.echo(line, err=True)
        fail(str(exc))
    typer.echo(f"Built {opfile.image} ({image_id.removeprefix('sha256:')[:12]})")
    return image_id


@app.command("build")
def build(
    file: FileOption = None,
    base_image: BaseImageOption = None,
    network: BuildNetworkOption = None,
    no_cache: NoCacheOption = False,
    quiet: QuietOption = False,
) -> None:
    """Build the op's image, tagged as gyoza.yml says (default gyoza/NAME:VERSION), with the op SDK inside."""
    _build(load(file), base_image, network, no_cache, quiet)


@app.command("test")
def test(
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", metavar="KEY=VALUE", help="Typed by the op's input specs (repeat)"),
    ] = None,
    inputs_file: Annotated[
        Path | None, typer.Option(help="A JSON object of inputs; -i values override its keys")
    ] = None,
    network: Annotated[str, typer.Option(help="Docker network for the container")] = "none",
    file: FileOption = None,
) -> None:
    """Run the op's image once, locally, through the IO contract (no server) and print its outputs."""
    from gyoza.cli.runs import parse_inputs
    from gyoza.core.specs import resolve_inputs

    opfile = load(file)
    # -i means what it means for `gyoza run`: values typed by the op's input specs.
    given = {**_read_inputs_file(inputs_file), **parse_inputs(opfile.definition.input_specs, inputs or [])}
    resolved, problems = resolve_inputs(given, opfile.definition.input_specs)
    if problems:
        typer.secho(f"inputs do not match the input specs of {opfile.name}:", fg="red", err=True)
        for problem in problems:
            typer.secho(f"  {problem['field']}: {problem['problem']}", fg="red", err=True)
        raise typer.Exit(EXIT_INVALID)
    _run_trial(opfile, resolved, network)


def _run_trial(opfile: OpFile, inputs: dict[str, Any], network: str) -> None:
    import docker.errors

    from gyoza.cli.errors import EXIT_INTERRUPTED
    from gyoza.opfile.trial import run_trial
    from gyoza.schema import FailureReason

    def on_event(kind: str, msg: str | int) -> None:
        typer.echo(f"progress {msg:>3}%" if kind == "PROGRESS" else f"info     {msg}", err=True)

    typer.echo(f"Running {opfile.image} with inputs {json.dumps(inputs)}", err=True)
    try:
        result = asyncio.run(run_trial(opfile.definition, inputs, network, on_event))
    except docker.errors.DockerException as exc:
        fail(f"cannot run the container: {exc}")
    if result.reason == FailureReason.IMAGE_NOT_FOUND:
        fail(f"image {opfile.image} is not on this machine: build it first with `gyoza op build`")
    if result.reason == FailureReason.CONTAINER_ERROR:
        fail(result.error)
    if result.type == "CANCELLED":
        fail(f"CANCELLED after {result.duration_s:.1f} s: the container was stopped", EXIT_INTERRUPTED)
    if result.type != "COMPLETED":
        if result.logs.strip():
            typer.echo("--- container output ---", err=True)
            typer.echo(result.logs.rstrip("\n"), err=True)
            typer.echo("---", err=True)
        reason = result.reason.value if result.reason else result.type
        fail(f"FAILED ({reason}, exit code {result.exit_code}) after {result.duration_s:.1f} s: {result.error}")
    typer.secho(f"COMPLETED in {result.duration_s:.1f} s", fg="green", err=True)
    typer.echo(json.dumps(result.outputs, indent=2, ensure_ascii=False))


def _read_inputs_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{display_path(path)}: cannot read inputs: {exc}", EXIT_INVALID)
    if not isinstance(data, dict):
        fail(f"{display_path(path)}: must hold a JSON object of inputs", EXIT_INVALID)
    return data


def deploy(
    ctx: typer.Context,
    file: FileOption = None,
    no_build: Annotated[bool, typer.Option("--no-build", help="Deploy without building the image first")] = False,
    base_image: BaseImageOption = None,
    network: BuildNetworkOption = None,
    no_cache: NoCacheOption = False,
    quiet: QuietOption = False,
) -> None:
    """Validate gyoza.yml, build the image and upsert the definition (an identical re-deploy changes nothing)."""
    from gyoza.cli.errors import api
    from gyoza.cli.fit import warn_if_unplaceable
    from gyoza.errors import NotFound, VersionConflict

    opfile = load(file)
    with api(ctx) as client:
        try:
            # Checked before building: rebuilding the tag of a deployed version would change what its runs execute.
            stored = client.get_definition(opfile.name, opfile.version)
        except NotFound:
            stored = None
        if stored is not None and not opfile.same_content(stored):
            _version_taken(opfile)
        if not no_build:
            from gyoza.opfile.build import local_image_id

            before = local_image_id(opfile.image) if stored is not None else None
            after = _build(opfile, base_image, network, no_cache, quiet)
            if before is not None and after != before:
                typer.secho(
                    f"warning: the image {opfile.image} changed (code or Dockerfile) but the version did not: runs "
                    f"of {opfile.version} on this machine now use the new image. Bump `version` to keep deployed "
                    "versions unchanged.", fg="yellow", err=True,
                )  # fmt: skip
        try:
            client.deploy_definition(opfile.definition)
        except VersionConflict:  # deployed by someone else since the check above
            _version_taken(opfile)
        if stored is None:
            typer.secho(f"Deployed {opfile.name} {opfile.version} (image {opfile.image})", fg="green")
        else:
            typer.echo(f"{opfile.name} {opfile.version} is already deployed with this content: unchanged")
        definition = opfile.definition
        warn_if_unplaceable(client, definition.constraints, definition.tags, f"{opfile.name} {opfile.version}")
    typer.echo(f"Run it:  {run_example(opfile)}")


def _version_taken(opfile: OpFile) -> NoReturn:
    fail(
        f"{opfile.name} {opfile.version} is already deployed with different content, and a deployed version never "
        f"changes: bump `version` in {display_path(opfile.path)} (e.g. to {next_version(opfile.version)}) and deploy "
        "again",
        EXIT_VERSION_TAKEN,
    )


def next_version(version: str) -> str:
    """The suggested bump: the last number incremented (``0.1.0`` -> ``0.1.1``, ``v2`` -> ``v3``)."""
    match = re.search(r"(\d+)(?!.*\d)", version)
    if match is None:
        return f"{version}.1"
    return f"{version[: match.start()]}{int(match.group()) + 1}{version[match.end() :]}"


def run_example(opfile: OpFile) -> str:
    """``gyoza run NAME -i ...`` with the required inputs, valued from examples/inputs.json when it has them."""
    examples: dict[str, Any] = {}
    with_examples = opfile.root / "examples" / "inputs.json"
    try:
        loaded = json.loads(with_examples.read_text(encoding="utf-8"))
        examples = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    parts = ["gyoza", "run", opfile.name]
    for key, spec in opfile.definition.input_specs.items():
        if not spec.required or spec.default is not None:
            continue
        value = examples.get(key)
        text = f"<{spec.type.value}>" if value is None else value if isinstance(value, str) else json.dumps(value)
        parts += ["-i", shlex.quote(f"{key}={text}")]
    return " ".join([*parts, "--wait"])
