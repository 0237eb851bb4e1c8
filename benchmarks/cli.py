"""`ifexp-bench`: the performance harness; every result is a JSON file.

    ifexp-bench SUBCOMMAND [OPTIONS] --out RESULT.json

One subcommand per module of this folder (README.md here): a dataclass whose fields are its
options and whose `execute()` returns the result, written to --out and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from benchmarks.common import Benchmark
from benchmarks.e2e import E2e
from benchmarks.features import Features
from benchmarks.flaws import Flaws
from benchmarks.lds import Lds
from benchmarks.memory import Memory
from benchmarks.scores import Scores

COMMANDS: dict[str, type[Benchmark]] = {
    "features": Features,
    "scores": Scores,
    "lds": Lds,
    "flaws": Flaws,
    "e2e": E2e,
    "memory": Memory,
}


def add_options(parser: argparse.ArgumentParser, command: type[Benchmark]) -> None:
    """One option per field: `seq_len: int = option(256)` is `--seq-len INT` (default 256), a list
    takes several values, a bool is a flag, a field without a default is required."""
    hints = typing.get_type_hints(command)
    for spec in dataclasses.fields(command):
        settings = {key: value for key, value in spec.metadata.items() if value is not None}
        positional = settings.pop("positional", False)
        kind = hints[spec.name]
        if isinstance(kind, types.UnionType):  # `X | None`: None is the default
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if typing.get_origin(kind) is list:
            settings.setdefault("nargs", "+")
            kind = typing.get_args(kind)[0]
        if kind is bool:
            settings["action"] = "store_true"
        else:
            settings["type"] = kind
        if spec.default is not dataclasses.MISSING:
            settings["default"] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            settings["default"] = spec.default_factory()
        elif not positional:
            settings["required"] = True
        if settings.get("default") is not None:
            settings["help"] = f"{settings.get('help', '')} (default: %(default)s)".strip()
        flag = spec.name if positional else "--" + spec.name.replace("_", "-")
        parser.add_argument(flag, **settings)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ifexp-bench", description=__doc__.split("\n\n")[0])
    subcommands = root.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        add_options(subcommands.add_parser(name, help=command.__doc__.strip().splitlines()[0]), command)
    return root


def main(argv: list[str] | None = None) -> None:
    options = vars(parser().parse_args(argv))
    command = COMMANDS[options.pop("command")](**options)
    result = command.execute()
    Path(command.out).parent.mkdir(parents=True, exist_ok=True)
    Path(command.out).write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
