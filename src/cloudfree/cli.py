"""The ``cloudfree`` command line: one entry point, sub-commands registered by feature modules.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)`` which adds its sub-commands
and sets ``func`` on them (``func(args) -> int``).
"""

from __future__ import annotations

import argparse
import gc
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
    "cloudfree.viewer.cli",  # view
    "cloudfree.onebox",  # composite (one machine, no AWS)
    "cloudfree.plan_command",  # plan (a dry run: what a year costs; cloudfree.costs)
)

#: The module that registers each sub-command: a command names its own module, and only that
#: one is imported (``cloudfree composite`` skips the local stack's, the pipeline's, the
#: viewer's and synth's imports); help, ``--version`` and unknown commands import them all.
#: ``tests/unit/test_cli_errors.py`` checks it against what the modules register.
COMMANDS = {
    "local": "cloudfree.local.cli", "synth": "cloudfree.synth.cli",
    **dict.fromkeys(("run", "status", "reprocess", "fetch", "deploy", "catalog", "demo"),
                    "cloudfree.pipeline.cli"),
    "view": "cloudfree.viewer.cli", "composite": "cloudfree.onebox",
    "plan": "cloudfree.plan_command",
}


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


class _Version(argparse.Action):
    """``--version``: cloudfree's, GDAL's and the zlib GDAL inflates and deflates with (imports
    rasterio, so only when asked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        import rasterio

        from .deflate import gdal_zlib

        print(f"cloudfree {__version__} (GDAL {rasterio.__gdal_version__}, "
              f"zlib {gdal_zlib()['version']})")
        parser.exit()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the sub-command of ``argv`` alone when it names one (:data:`COMMANDS`;
    the top-level options take no values), else with every sub-command."""
    parser = argparse.ArgumentParser(prog="cloudfree", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="the version, GDAL's and the zlib GDAL runs, then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    first = next((a for a in argv or () if not a.startswith("-")), None)
    modules = (COMMANDS[first],) if first in COMMANDS and "--version" not in (argv or ()) \
        else COMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # feature not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None: ``sys.argv``), or a call with its arguments (tests)."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            # The process ends next. Python's finalization runs full garbage collections over
            # every object the imports made (numpy, rasterio, boto3, ...): 0.23-0.3 s of the
            # ~0.3 s between a `cloudfree composite` writing its last file and the process
            # ending (perf). Frozen objects are skipped by those collections and freed with
            # the process all the same.
            gc.freeze()


def _main(argv: list[str] | None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for noisy in ("botocore", "boto3", "urllib3", "rasterio", "s3transfer", "numexpr",
                      "stac_io", "rustac"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CloudfreeError as err:
        print(f"cloudfree: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        advice = explain(err)
        if advice is None:
            raise
        print(f"cloudfree: error: {advice}", file=sys.stderr)
        return 2


#: What to do when this shell cannot reach AWS or the local stack.
LOCAL_HINT = 'for the local stack: `make up`, then eval "$(.venv/bin/cloudfree local env)"'


def explain(err: BaseException) -> str | None:
    """An actionable message for the errors of the AWS SDK a user meets first (credentials,
    endpoint down, stack missing); None for anything else. botocore's classes: see
    botocore/exceptions.py (``NoCredentialsError``, ``EndpointConnectionError``, ...)."""
    import os

    from botocore import exceptions as bex

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if isinstance(err, bex.NoCredentialsError | bex.PartialCredentialsError):
        return ("AWS credentials missing: configure them (`aws configure`, AWS_PROFILE or "
                f"`aws sso login`; see docs/guide.md), or {LOCAL_HINT}")
    if isinstance(err, bex.NoRegionError):
        return f"no AWS region: set AWS_REGION (e.g. us-west-2), or {LOCAL_HINT}"
    if isinstance(err, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        if endpoint:
            return (f"cannot reach {endpoint}: the local stack is down; start it with "
                    "`make up` (check with `make status`)")
        return f"cannot reach AWS ({err}); check the network and AWS_REGION"
    if isinstance(err, bex.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                    "UnrecognizedClientException", "InvalidAccessKeyId"):
            return (f"AWS credentials rejected ({code}): refresh them (`aws sso login` or "
                    f"`aws configure`), or {LOCAL_HINT}")
    return None


if __name__ == "__main__":
    sys.exit(main())
