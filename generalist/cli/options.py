"""Options several commands share."""

from __future__ import annotations

import argparse

from generalist.errors import ConfigError


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """`--import MODULE` (repeatable): a user module declaring extra tasks or mixtures."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="extra module (dotted name or .py path) that registers tasks or mixtures",
    )


def add_dataset_option_argument(parser: argparse.ArgumentParser) -> None:
    """`--option NAME=VALUE` (repeatable): an option of the dataset's adapter."""
    parser.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the dataset's adapter (`generalist tasks` lists them), "
        "e.g. language=all for slake_vqa",
    )


def parse_dataset_options(values: list[str]) -> dict[str, str]:
    """{'name': 'value'} from NAME=VALUE strings; ConfigError for one without '=' or repeated."""
    options: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--option {value!r}: expected NAME=VALUE, e.g. language=all")
        if name in options:
            raise ConfigError(f"--option {name} is given twice")
        options[name] = rest.strip()
    return options
