"""``sam build`` + ``sam deploy`` of ``template.yaml``, locally to MiniStack (or read a stack).

SAM CLI lives in its own venv (``.venv-sam``: MiniStack pins botocore exactly). The build is
cached: it is skipped while the hash of its inputs (template, functions, layer, library source,
state machine) matches the last build's. A local deploy is skipped while the build hash, the
parameters and the endpoint match the last successful deploy of a stack that still exists;
otherwise ``sam deploy --no-fail-on-empty-changeset`` makes a repeated deploy a no-op anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CloudfreeError

REPO = Path(__file__).resolve().parents[3]
BUILD_INPUTS = ("template.yaml", "functions", "layers", "src/cloudfree", "statemachine",
                "scripts/zlib_ng.py", "scripts/check_glibc.py")
ARTIFACT_BUCKET = "cloudfree-sam-artifacts"
LOCAL_REGION = "us-east-1"
#: Parameter overrides for a local deploy (2 vCPU: keep the fan-out small).
LOCAL_PARAMETERS = {"TileConcurrency": "2", "BandConcurrency": "2", "WindowConcurrency": "1",
                    "ToleratedFailurePercentage": "0", "LogLevel": "INFO"}
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}


class DeployError(CloudfreeError):
    """sam build / sam deploy failed, or the stack lacks an output."""


@dataclass(frozen=True)
class StackInfo:
    """A deployed stack, from its CloudFormation outputs and parameters."""

    stack_name: str
    work_bucket: str
    data_bucket: str
    control_bucket: str
    state_machine_arn: str
    state_machine_name: str
    data_public_url: str
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)


def say(msg: str) -> None:
    print(f"deploy: {msg}", file=sys.stderr, flush=True)


def _files(repo: Path, inputs: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for name in inputs:
        p = repo / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file() and not _SKIP_PARTS & set(
                f.relative_to(repo).parts) and f.suffix != ".pyc")
    return sorted(out)


def source_hash(repo: Path = REPO, inputs: Iterable[str] = BUILD_INPUTS) -> str:
    """sha256 over the relative path and bytes of every build input file."""
    h = hashlib.sha256()
    for f in _files(repo, inputs):
        h.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _sam(repo: Path) -> str:
    sam = repo / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        raise DeployError(f"SAM CLI not found at {sam}; run `make setup`")
    return str(sam)


def _run(cmd: list[str], repo: Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise DeployError(f"{' '.join(cmd[:3])} failed ({res.returncode}):\n{tail}")
    return res.stdout + res.stderr


def build(repo: Path = REPO, force: bool = False) -> Path:
    """``sam build`` unless nothing changed since the last one; returns the built template."""
    import fcntl

    repo = Path(repo)
    built = repo / ".aws-sam" / "build" / "template.yaml"
    stamp = repo / ".aws-sam" / "cloudfree-build.sha256"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    # one build at a time per checkout (parallel test workers, a demo beside the tests): the
    # others wait, then find the stamp current and skip
    with open(stamp.parent / "cloudfree-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = source_hash(repo)
        if not force and built.exists() and stamp.exists() and stamp.read_text() == digest:
            say(f"sam build skipped (inputs unchanged, {digest[:12]})")
            return built
        say("sam build ...")
        t0 = time.monotonic()
        env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
        _run([_sam(repo), "build", "--template-file", "template.yaml"], repo, env)
        stamp.write_text(digest)
        say(f"sam build done in {time.monotonic() - t0:.1f}s")
        return built


def _endpoint() -> str:
    url = os.environ.get("AWS_ENDPOINT_URL")
    if url:
        return url
    from ..local import stack

    return stack().require().aws_endpoint_url


def _local_env(endpoint: str) -> dict[str, str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": LOCAL_REGION,
           "AWS_DEFAULT_REGION": LOCAL_REGION, "SAM_CLI_TELEMETRY": "0"}
    env.setdefault("AWS_ACCESS_KEY_ID", "test")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    return env


def _client(service: str, endpoint: str | None = None):
    import boto3

    kw = {"endpoint_url": endpoint} if endpoint else {}
    return boto3.client(service, **kw)


def _ensure_bucket(endpoint: str, name: str) -> None:
    s3 = _client("s3", endpoint)
    try:
        s3.head_bucket(Bucket=name)
    except Exception:  # noqa: BLE001 - any miss: create it
        s3.create_bucket(Bucket=name)
        say(f"created artifact bucket {name}")


def template_defaults(template: Path = REPO / "template.yaml") -> dict[str, str]:
    """Every parameter's ``Default`` in the template's top-level ``Parameters:`` block (text,
    quotes removed). Read line by line: the template's own layout (2-space parameter names,
    4-space ``Default:``), so no YAML library with CloudFormation tags is needed."""
    out: dict[str, str] = {}
    name, inside = None, False
    for line in template.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.rstrip() == "Parameters:"
            continue
        if inside and (m := re.match(r"^  ([A-Za-z0-9]+):\s*$", line)):
            name = m.group(1)
        elif inside and name and (m := re.match(r"^    Default:\s*(.*?)\s*$", line)):
            out[name] = m.group(1).strip("\"'")
    return out


def local_parameters(endpoint: str, stac_api_url: str | None = None,
                     overrides: dict[str, str] | None = None,
                     template: Path = REPO / "template.yaml") -> dict[str, str]:
    """Template parameters of a local deploy (GDAL's S3 endpoint = MiniStack's host:port).

    Every parameter is passed, the template's default where nothing else is asked: ``sam
    deploy`` keeps a parameter's *previous* value when ``--parameter-overrides`` omits it
    (samcli/commands/deploy/deploy_context.py ``merge_parameters``: ``UsePreviousValue``), so a
    deploy with ``FaultRate=0.2`` followed by a plain one would keep injecting faults (seen:
    test_pipeline_faults' restore was "No changes to deploy")."""
    if stac_api_url is None:
        stac_api_url = os.environ.get("STAC_API_URL")
    if stac_api_url is None:
        from ..local import stack

        stac_api_url = stack().require().stac_api_url
    params = {**template_defaults(template), "Local": "true",
              "LocalS3Endpoint": urlsplit(endpoint).netloc, "StacApiUrl": stac_api_url,
              **LOCAL_PARAMETERS}
    params.update({k: str(v) for k, v in (overrides or {}).items()})
    return params


def deploy_local(stack_name: str = "cloudfree", endpoint: str | None = None,
                 stac_api_url: str | None = None, parameters: dict[str, str] | None = None,
                 repo: Path = REPO, force: bool = False) -> StackInfo:
    """Build (cached) and deploy the template to MiniStack; return the stack's outputs."""
    repo = Path(repo)
    endpoint = endpoint or _endpoint()
    params = local_parameters(endpoint, stac_api_url, parameters, repo / "template.yaml")
    built = build(repo)
    stamp_file = repo / ".aws-sam" / f"cloudfree-deploy-{stack_name}.json"
    stamp = {"build": (repo / ".aws-sam" / "cloudfree-build.sha256").read_text(),
             "params": params, "endpoint": endpoint}
    if not force and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        try:
            info = stack_info(stack_name, endpoint)
        except DeployError:
            info = None
        if info and info.status.endswith("_COMPLETE") and "ROLLBACK" not in info.status:
            say(f"stack {stack_name} is up to date ({info.status}); sam deploy skipped")
            return info
    _ensure_bucket(endpoint, ARTIFACT_BUCKET)
    cmd = [_sam(repo), "deploy", "--template-file", str(built), "--stack-name", stack_name,
           "--s3-bucket", ARTIFACT_BUCKET, "--s3-prefix", stack_name, "--region", LOCAL_REGION,
           "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
           "--no-confirm-changeset", "--no-fail-on-empty-changeset", "--no-progressbar",
           "--parameter-overrides", *[f"{k}={v}" for k, v in params.items()]]
    say(f"sam deploy {stack_name} to {endpoint} ...")
    t0 = time.monotonic()
    out = _run(cmd, repo, _local_env(endpoint))
    no_change = "No changes to deploy" in out
    say(f"sam deploy done in {time.monotonic() - t0:.1f}s" + (" (no changes)" if no_change
                                                               else ""))
    info = stack_info(stack_name, endpoint)
    stamp_file.write_text(json.dumps(stamp, indent=1))
    return info


def stack_info(stack_name: str = "cloudfree", endpoint: str | None = None) -> StackInfo:
    """Outputs and parameters of an already deployed stack (boto3 goes where the env says)."""
    cfn = _client("cloudformation", endpoint)
    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" not in str(err):
            raise
        raise DeployError(f"stack {stack_name!r} is not deployed here: deploy it first with "
                          "`cloudfree deploy` (local stack) or `sam deploy --guided` (AWS, see "
                          "docs/guide.md), or pass --stack NAME") from err
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    try:
        return StackInfo(stack_name, outputs["WorkBucketName"], outputs["DataBucketName"],
                         outputs["ControlBucketName"], outputs["StateMachineArn"],
                         outputs["StateMachineName"], outputs["DataPublicUrl"],
                         stack.get("StackStatus", ""), outputs, params)
    except KeyError as err:
        raise DeployError(f"stack {stack_name!r} ({stack.get('StackStatus')}) lacks output "
                          f"{err}") from err
