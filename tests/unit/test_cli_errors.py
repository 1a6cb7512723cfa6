"""Every user-facing CLI error says what to do next (issue 9): the messages, asserted."""

from __future__ import annotations

import argparse
import sys

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from cloudfree import cli
from cloudfree.errors import InputError


def _main_with(err: BaseException, capsys, monkeypatch) -> tuple[int, str]:
    def boom(args):
        raise err

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda argv=None: parser)
    monkeypatch.setattr(parser, "parse_args",
                        lambda argv=None: argparse.Namespace(verbose=False, func=boom))
    code = cli.main([])
    return code, capsys.readouterr().err


def test_credentials_missing(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    code, err = _main_with(NoCredentialsError(), capsys, monkeypatch)
    assert code == 2
    assert "AWS credentials missing: configure them (`aws configure`" in err
    assert 'eval "$(.venv/bin/cloudfree local env)"' in err


def test_local_stack_down(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, err = _main_with(EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"), capsys,
                           monkeypatch)
    assert code == 2
    assert "cannot reach http://127.0.0.1:9: the local stack is down; start it with `make up`" \
        in err


def test_expired_credentials(capsys, monkeypatch):
    err = ClientError({"Error": {"Code": "ExpiredToken", "Message": "x"}}, "DescribeStacks")
    code, out = _main_with(err, capsys, monkeypatch)
    assert code == 2 and "AWS credentials rejected (ExpiredToken): refresh them" in out


def test_other_errors_are_not_swallowed(capsys, monkeypatch):
    err = ClientError({"Error": {"Code": "AccessDenied", "Message": "x"}}, "GetObject")
    with pytest.raises(ClientError):
        _main_with(err, capsys, monkeypatch)
    with pytest.raises(ZeroDivisionError):
        _main_with(ZeroDivisionError(), capsys, monkeypatch)


def test_wrong_tile_id_says_how_to_find_tiles(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fetch", "--year", "2021", "--tile", "33XXX"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not an MGRS tile id: '33XXX'" in err
    assert "for the tiles of a place pass --aoi minlon,minlat,maxlon,maxlat" in err


def test_cloudfree_errors_print_their_message(capsys, monkeypatch):
    code, err = _main_with(InputError("bad thing; do this"), capsys, monkeypatch)
    assert (code, err.strip()) == (2, "cloudfree: error: bad thing; do this")


def test_stack_not_deployed(monkeypatch):
    from cloudfree.pipeline import deploy

    class Cfn:
        def describe_stacks(self, StackName):  # noqa: N803 (boto3's name)
            raise ClientError({"Error": {"Code": "ValidationError",
                                         "Message": f"Stack with id {StackName} does not exist"}},
                              "DescribeStacks")

    monkeypatch.setattr(deploy, "_client", lambda service, endpoint=None: Cfn())
    with pytest.raises(deploy.DeployError) as exc:
        deploy.stack_info("mine")
    assert str(exc.value).startswith("stack 'mine' is not deployed here: deploy it first with "
                                     "`cloudfree deploy` (local stack) or `sam deploy --guided`")


@pytest.mark.parametrize("status, marker, expected", [
    ("empty", {"reason": "no items for 33UUP in 2016"},
     "nothing published for 33UUP 2016: no scenes for that year (no items for 33UUP in 2016); "
     "pick another year"),
    ("failed", None, "the tile failed; reprocess it with `cloudfree reprocess --year 2016 "
                     "--tiles 33UUP`"),
    ("failed-never-ran", None, "run it first with `cloudfree run --year 2016 --tiles 33UUP`"),
])
def test_nothing_published_says_why(monkeypatch, status, marker, expected):
    from cloudfree.pipeline import run

    row = {"tile": "33UUP", "status": status.split("-")[0]}
    if status != "failed-never-ran":
        row["marker_at"] = "2026-01-01T00:00:00Z"
    monkeypatch.setattr(run, "tile_status", lambda tile, year, settings: row)
    monkeypatch.setattr(run.storage, "read_json", lambda uri: marker)
    deployed = run.Deployed("s", "w", "d", "c", "arn")
    assert expected in run.not_published(deployed, 2016, "33UUP")


def test_progress_bar_draws_done_of_total(capsys):
    from cloudfree.progress import progress_bar

    with progress_bar("reading items", force=True) as advance:
        for i in range(1, 4):
            advance(i, 3)
    err = capsys.readouterr().err
    assert "reading items" in err and "3/3" in err
    with progress_bar("quiet", force=False) as advance:
        advance(1, 1)
    assert capsys.readouterr().err == ""


def test_fetch_reads_the_item_once_and_says_why_when_it_is_missing(monkeypatch, tmp_path):
    """One GET gives the item (saved as read, no HEAD first); a missing item (NoSuchKey) is
    answered with :func:`run.not_published`. botocore's Stubber fails on any other S3 call."""
    import json

    import boto3
    from botocore.stub import Stubber

    from cloudfree import storage
    from cloudfree.pipeline import run

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    monkeypatch.setattr(storage, "s3_client", lambda endpoint_url=None: client)
    got: list[tuple[str, str]] = []
    monkeypatch.setattr(storage, "download_file", lambda uri, path: got.append((uri, path.name)))
    deployed = run.Deployed("s", "w", "d", "c", "arn")
    key = "sentinel-2-annual-median/2021/33UUP/33UUP_2021.json"
    body = json.dumps({"id": "33UUP_2021", "assets": {
        "red": {"href": "https://d.s3.us-west-2.amazonaws.com/x/v1/33UUP_2021_red.tif"}}})
    with Stubber(client) as stub:
        stub.add_response("get_object", {"Body": _Body(body.encode())},
                          {"Bucket": "d", "Key": key})
        files = run.fetch(deployed, 2021, "33uup", tmp_path)
        stub.add_client_error("get_object", service_error_code="NoSuchKey",
                              http_status_code=404)
        monkeypatch.setattr(run, "not_published", lambda d, y, t: f"nothing for {t} {y}")
        with pytest.raises(InputError, match="nothing for 33UUP 2021"):
            run.fetch(deployed, 2021, "33UUP", tmp_path / "again")
    assert [f.name for f in files] == ["33UUP_2021.json", "33UUP_2021_red.tif"]
    assert files[0].read_text() == body
    assert got == [("s3://d/x/v1/33UUP_2021_red.tif", "33UUP_2021_red.tif")]


class _Body:
    """A GetObject body for the Stubber (botocore's StreamingBody reads like this)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, *args) -> bytes:
        return self.data


def test_each_command_imports_the_module_that_registers_it():
    """``cli.COMMANDS`` names, for every sub-command the modules register, the module that
    registers it: ``cloudfree composite`` builds its parser from ``cloudfree.onebox`` alone."""
    full = cli.build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)
    for command, module in cli.COMMANDS.items():
        one = cli.build_parser([command, "--help"])
        sub1 = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction))
        assert command in sub1.choices, (command, module)
        assert set(sub1.choices) == {c for c, m in cli.COMMANDS.items() if m == module}
    everything = cli.build_parser(["-v", "nonsense"])
    sub2 = next(a for a in everything._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub2.choices) == set(cli.COMMANDS)


def test_the_program_freezes_its_objects_before_python_finalizes_them(monkeypatch, capsys):
    """As the program (no argv), main freezes the heap's objects on its way out, so that
    Python's finalizing collections skip them; a call with arguments (tests, other code)
    leaves the collector alone."""
    import gc

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "argv", ["cloudfree", "plan", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert frozen == [True]
    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    assert frozen == [True]
    capsys.readouterr()
