"""``cloudfree local up|down|status|env``: manage the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import shlex

from .services import stack


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="the local stack (MiniStack + STAC API on 127.0.0.1)")
    lsub = p.add_subparsers(dest="local_command", required=True)
    lsub.add_parser("up", help="start every service (idempotent)").set_defaults(func=_up)
    lsub.add_parser("down", help="stop every service").set_defaults(func=_down)
    lsub.add_parser("status", help="health of each service, and how to fix it").set_defaults(
        func=_status)
    lsub.add_parser("env", help="shell exports: eval \"$(cloudfree local env)\"").set_defaults(
        func=_env)


def _up(args: argparse.Namespace) -> int:
    ep = stack().up()
    print(f"MiniStack  {ep.aws_endpoint_url}\nSTAC API   {ep.stac_api_url}\n"
          f"PostgreSQL 127.0.0.1:{ep.postgres_port}")
    print('point your shell at it: eval "$(.venv/bin/cloudfree local env)"')
    return 0


def _down(args: argparse.Namespace) -> int:
    stack().down()
    print("local stack stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    health = stack().health()
    for name, h in health.items():
        mark = "up  " if h["up"] else "DOWN"
        print(f"{mark} {name:10s} {h.get('url', '')}" + ("" if h["up"] else f"  fix: {h['fix']}"))
    return 0 if all(h["up"] for h in health.values()) else 1


def _env(args: argparse.Namespace) -> int:
    env = stack().require().environment()
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def status_json() -> str:
    return json.dumps(stack().health(), indent=1)
