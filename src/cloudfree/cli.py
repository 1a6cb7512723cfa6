"""The ``cloudfree`` command line: one entry point, sub-commands registered by feature modules.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)`` which adds its sub-commands
and sets ``func`` on them (``func(args) -> int``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from . import __version__
from .errors import CloudfreeError, InputError

COMMAND_MODULES = (
    "cloudfree.local.cli",  # local up/down/status/env
    "cloudfree.synth.cli",  # synth
    "cloudfree.pipeline.cli",  # run/status/reprocess/fetch/deploy
)


def checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a domain parser: an :class:`InputError` becomes the usage error
    (``argument --aoi: bbox ...``, exit 2) instead of argparse's bare "invalid value"."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    convert.__name__ = parse.__name__
    return convert


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer within ``low``-``high``."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise InputError(f"must be an integer, got {text!r}") from err
        if not low <= value <= high:
            raise InputError(f"must be within {low}-{high}, got {value}")
        return value

    return checked(count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudfree", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cloudfree {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # feature not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for noisy in ("botocore", "boto3", "urllib3", "rasterio", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CloudfreeError as err:
        print(f"cloudfree: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
