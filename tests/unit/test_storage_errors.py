"""storage: every S3 call turns throttling, 5xx and dropped connections into TransientError.

GIVEN a real botocore S3 client whose answers come from botocore's Stubber (no network),
WHEN a storage call gets SlowDown / 503 / 500 / RequestLimitExceeded / a connection error,
THEN it raises TransientError (a name the state machine retries, cloudfree.retry), while
permanent errors (AccessDenied, NoSuchBucket) pass through unchanged and "not found" is an answer.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import ANY, Stubber

from cloudfree import retry, storage
from cloudfree.errors import CorruptObjectError, TransientError

URI = "s3://bucket/work/2023/33UUP/x.json"
THROTTLES = [("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500),
             ("RequestLimitExceeded", 503), ("RequestTimeout", 400), ("Throttling", 400),
             ("503", 503), ("BadGateway", 502), ("TooManyRequests", 429)]


@pytest.fixture
def stub(monkeypatch):
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    monkeypatch.setattr(storage, "s3_client", lambda endpoint_url=None: client)
    with Stubber(client) as s:
        yield s
        s.assert_no_pending_responses()


def _calls(tmp_path):
    """(operation botocore sees, storage call) for every storage entry point that talks to S3."""
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    return [
        ("get_object", lambda: storage.read_bytes(URI)),
        ("get_object", lambda: storage.read_json(URI)),
        ("get_object", lambda: storage.read_if_exists(URI)),
        ("get_object", lambda: storage.read_json_if_exists(URI)),
        ("put_object", lambda: storage.write_bytes(URI, b"x")),
        ("put_object", lambda: storage.write_json(URI, {"a": 1})),
        ("put_object", lambda: storage.put_if(URI, b"x", None)),
        ("put_object", lambda: storage.put_if(URI, b"x", '"etag"')),
        ("head_object", lambda: storage.exists(URI)),
        ("head_object", lambda: storage.etag(URI)),
        ("head_object", lambda: storage.head(URI)),
        ("list_objects_v2", lambda: list(storage.list_uris("s3://bucket/work/"))),
        ("list_objects_v2", lambda: list(storage.list_objects("s3://bucket/work/"))),
        ("put_object", lambda: storage.upload_file(src, URI, "application/json")),
        ("head_object", lambda: storage.download_file(URI, tmp_path / "out.bin")),
    ]


@pytest.mark.parametrize("code,status", THROTTLES)
def test_every_call_classifies_throttling_and_5xx_as_transient(stub, tmp_path, code, status):
    for op, call in _calls(tmp_path):
        stub.add_client_error(op, service_error_code=code, http_status_code=status)
        with pytest.raises(TransientError, match="S3 ") as info:
            call()
        assert isinstance(info.value.__cause__, Exception), op


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("NoSuchBucket", 404),
                                         ("InvalidRequest", 400)])
def test_permanent_errors_pass_through_unchanged(stub, tmp_path, code, status):
    for op, call in _calls(tmp_path):
        if op == "head_object" and code == "NoSuchBucket":
            continue  # a HEAD 404 reads as "not found" (below)
        stub.add_client_error(op, service_error_code=code, http_status_code=status)
        with pytest.raises(Exception) as info:
            call()
        assert not isinstance(info.value, TransientError), (op, code)
        assert not storage.is_transient(info.value)


def test_not_found_is_an_answer_not_an_error(stub):
    for _ in range(2):
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    assert storage.exists(URI) is False
    assert storage.etag(URI) is None
    stub.add_response("head_object", {"ETag": '"abc"'}, {"Bucket": "bucket", "Key": ANY})
    assert storage.etag(URI) == '"abc"'
    for _ in range(2):
        stub.add_client_error("get_object", service_error_code="NoSuchKey",
                              http_status_code=404)
    assert storage.read_if_exists(URI) is None
    assert storage.read_json_if_exists(URI) is None


def test_read_if_exists_on_local_files(tmp_path):
    path = str(tmp_path / "a" / "x.json")
    assert storage.read_if_exists(path) is None
    assert storage.read_json_if_exists(path) is None
    storage.write_json(path, {"a": 1})
    assert storage.read_json_if_exists(path) == {"a": 1}
    storage.write_bytes(path, b"{broken")
    assert storage.read_if_exists(path) == b"{broken"
    with pytest.raises(CorruptObjectError, match="x.json is not valid JSON"):
        storage.read_json_if_exists(path)


def test_conditional_put_reports_a_lost_race_and_retries_a_conflict(stub):
    stub.add_client_error("put_object", service_error_code="PreconditionFailed",
                          http_status_code=412)
    assert storage.put_if(URI, b"x", '"old"') is False
    stub.add_client_error("put_object", service_error_code="ConditionalRequestConflict",
                          http_status_code=409)
    with pytest.raises(TransientError):
        storage.put_if(URI, b"x", None)
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": "work/2023/33UUP/x.json",
                                         "Body": b"x", "IfNoneMatch": "*",
                                         "ContentType": "application/json"})
    assert storage.put_if(URI, b"x", None) is True


def test_connection_errors_and_wrapped_client_errors_are_transient():
    assert storage.is_transient(EndpointConnectionError(endpoint_url="http://s3"))
    assert storage.is_transient(ReadTimeoutError(endpoint_url="http://s3"))
    slow = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {
        "HTTPStatusCode": 503}}, "PutObject")
    try:  # boto3's upload_file raises S3UploadFailedError while handling the ClientError
        try:
            raise slow
        except ClientError:
            raise RuntimeError("Failed to upload f to bucket/key") from None
    except RuntimeError as wrapped:
        assert wrapped.__context__ is slow and storage.is_transient(wrapped)
    assert not storage.is_transient(ValueError("bad"))


def test_botocore_codes_are_covered():
    """Our list keeps up with botocore's own throttling/transient codes (retries/standard.py)."""
    from botocore.retries import standard

    theirs = set(getattr(standard.ThrottledRetryableChecker, "_THROTTLED_ERROR_CODES", []))
    theirs |= set(getattr(standard.TransientRetryableChecker, "_TRANSIENT_ERROR_CODES", []))
    assert theirs, "botocore renamed its retry code lists: re-check TRANSIENT_CODES"
    assert theirs - {"TransactionInProgressException", "EC2ThrottledException"} <= \
        storage.TRANSIENT_CODES


def test_client_retries_adaptively_and_transient_error_is_retried_by_the_state_machine():
    cfg = storage.s3_client.__wrapped__("http://127.0.0.1:1").meta.config
    # botocore stores max_attempts (retries after the first) as total_max_attempts = 1 + n
    assert cfg.retries == {"mode": "adaptive", "total_max_attempts": 9}
    assert retry.policy("TransientError") is retry.TRANSIENT
    assert retry.TRANSIENT.attempts >= 3


def test_botocore_retries_slowdown_itself_before_storage_sees_it(monkeypatch):
    """A loopback S3 stand-in answers 503 SlowDown twice, then the object: the read succeeds,
    after three requests (botocore's adaptive retries, storage.RETRY_CONFIG)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    slowdown = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            status, body = (503, slowdown) if len(seen) <= 2 else (200, b'{"ok": 1}')
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = storage.s3_client.__wrapped__(f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(storage, "s3_client", lambda endpoint_url=None: client)
        assert storage.read_json("s3://bucket/k.json") == {"ok": 1}
        assert seen == ["/bucket/k.json"] * 3
    finally:
        server.shutdown()
        server.server_close()
