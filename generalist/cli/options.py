"""Options several commands share."""

from __future__ import annotations

import argparse


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
