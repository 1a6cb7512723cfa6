"""Reading and writing objects by URI: ``s3://bucket/key`` or a local path.

One place builds the boto3 client (honouring ``AWS_ENDPOINT_URL`` for MiniStack) and the GDAL
environment rasterio needs to read ``s3://`` COGs from a local endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import CorruptObjectError, InputError, TransientError


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise InputError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def latency_threads(hrefs: Iterable[str], threads: int, local: int = 1) -> int:
    """Threads for small reads of ``hrefs`` (headers, HEADs, overview samples): ``threads``
    when any is remote (``s3://``, ``http(s)://``: each read waits tens of ms on the network,
    so many wait side by side), else ``local`` (at most the machine's cores). Local files have
    no latency to hide, and a new thread pays GDAL's and PROJ's per-thread set-up on its first
    open (about 45 ms here: checking bench-peer's 224 local assets took 1.4 s on 16 new
    threads, 0.7 s on the calling one); reads that decode enough to be worth a core more
    (harmonization's overview samples) ask for ``local`` = 2."""
    remote = any("://" in h and not h.startswith("file://") for h in hrefs)
    return max(1, threads) if remote else max(1, min(local, threads, os.cpu_count() or 1))


#: botocore's own retries run first, inside every call: "adaptive" is "standard" (exponential
#: backoff with jitter over botocore's transient and throttling codes) plus a client-side rate
#: limiter that slows a Lambda down when S3 answers SlowDown (botocore/retries/standard.py and
#: adaptive.py). What still fails after those attempts is classified below.
RETRY_CONFIG = {"max_attempts": 8, "mode": "adaptive"}


@lru_cache(maxsize=4)
def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; ``AWS_ENDPOINT_URL`` (MiniStack) is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries=dict(RETRY_CONFIG), max_pool_connections=32,
                 s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
                        config=cfg)


def error_code(err: BaseException) -> str:
    """The S3 error code of a botocore error (``"NoSuchKey"``, ``"SlowDown"``...), or ``""``."""
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))


def _status(err: BaseException) -> int:
    meta = getattr(err, "response", {}).get("ResponseMetadata", {})
    try:
        return int(meta.get("HTTPStatusCode") or 0)
    except (TypeError, ValueError):
        return 0


def is_not_found(err: Exception) -> bool:
    """True when a botocore error says the object (or key) does not exist."""
    return error_code(err) in {"404", "NoSuchKey", "NotFound"}


#: S3 error codes worth another try once botocore's own retries are spent: the union of
#: botocore's throttling and transient codes (botocore/retries/standard.py,
#: ThrottledRetryableChecker and TransientRetryableChecker) and S3's own 5xx codes (S3 API
#: reference, "Error responses": InternalError 500, ServiceUnavailable/SlowDown 503).
#: A HEAD has no body, so its error code is the bare status ("503").
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "RequestThrottled", "LimitExceededException",
    "ProvisionedThroughputExceededException", "PriorRequestNotComplete", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "OperationAborted",
    "ConditionalRequestConflict", "429", "500", "502", "503", "504",
})


def is_transient(err: BaseException) -> bool:
    """Throttling, 5xx, timeouts and dropped connections: worth retrying later.

    Looks through the exception chain: boto3's ``upload_file`` raises ``S3UploadFailedError``
    while handling the ``ClientError`` (boto3/s3/transfer.py), s3transfer's download raises
    ``RetriesExceededError`` wrapping the last connection error.
    """
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TransientError | BotoConnectionError | HTTPClientError):
            return True
        if error_code(e) in TRANSIENT_CODES or _status(e) >= 500 or _status(e) == 429:
            return True
        e = e.__cause__ or e.__context__ or getattr(e, "last_exception", None)
    return False


@contextmanager
def _s3(op: str, uri: str) -> Iterator[None]:
    """Run one S3 call: transient failures become TransientError (a Retry name in the table)."""
    try:
        yield
    except TransientError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised, classified
        if is_transient(err):
            raise TransientError(f"S3 {op} {uri}: {err}") from err
        raise


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """The object's bytes (at most the first ``max_bytes``: a ranged GET)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else {}
        with _s3("read", uri):
            try:
                return s3_client().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
            except Exception as err:  # noqa: BLE001 - a ranged GET of an empty object is 416
                if extra and error_code(err) == "InvalidRange":
                    return b""
                raise
    with open(uri, "rb") as f:
        return f.read(max_bytes if max_bytes else -1)


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        with _s3("write", uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def etag(uri: str) -> str | None:
    """The object's ETag (for a conditional put), or None when it does not exist."""
    if not is_s3(uri):
        info = _local_head(uri)
        return info.etag if info else None
    bucket, key = split_s3(uri)
    with _s3("head", uri):
        try:
            return s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
        except Exception as err:  # noqa: BLE001 - not found is an answer, the rest re-raised
            if is_not_found(err):
                return None
            raise


def put_if(uri: str, data: bytes, if_etag: str | None,
           content_type: str | None = "application/json") -> bool:
    """PutObject only if the object still has ETag ``if_etag`` (None: only if it is absent).

    Returns False when another writer got there first (412 PreconditionFailed); a 409
    ConditionalRequestConflict (a concurrent conditional write in flight) is transient.
    A local file: the same check on its :func:`_local_head` ETag (one writer: no race).
    """
    if not is_s3(uri):
        if etag(uri) != if_etag:
            return False
        write_bytes(uri, data)
        return True
    bucket, key = split_s3(uri)
    cond = {"IfMatch": if_etag} if if_etag else {"IfNoneMatch": "*"}
    extra = {"ContentType": content_type} if content_type else {}
    with _s3("conditional write", uri):
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, **cond, **extra)
            return True
        except Exception as err:  # noqa: BLE001 - a lost race is an answer, the rest re-raised
            if error_code(err) in {"PreconditionFailed", "412"}:
                return False
            raise


#: boto3 file transfers send one request up to this size, then parts of it, 4 at a time. S3
#: bills every request of a multipart upload (create, each part, complete) as a PUT
#: (https://aws.amazon.com/s3/pricing/): with s3transfer's defaults (8 MiB) a 14 MB window
#: GeoTIFF took 4 PUTs and a 500 MB band COG 65; with 64 MiB, 1 and 10. Parts in flight hold
#: at most 4 x 64 MiB (the assemble's peak is ~660 of 3,008 MB).
TRANSFER_PART_BYTES = 64 * 1024 * 1024
TRANSFER_CONCURRENCY = 4


def transfer_config():
    """The ``TransferConfig`` of :func:`upload_file` and :func:`download_file`."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=TRANSFER_PART_BYTES,
                          multipart_chunksize=TRANSFER_PART_BYTES,
                          max_concurrency=TRANSFER_CONCURRENCY)


def upload_file(path: str | Path, uri: str, content_type: str | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        with _s3("upload", uri):
            s3_client().upload_file(str(path), bucket, key, Config=transfer_config(), **extra)
    else:
        write_bytes(uri, Path(path).read_bytes())


def download_file(uri: str, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3("download", uri):
            s3_client().download_file(bucket, key, str(path), Config=transfer_config())
    else:
        Path(path).write_bytes(Path(uri).read_bytes())


def read_if_exists(uri: str) -> bytes | None:
    """The object's bytes, or None when it does not exist: one GET instead of a HEAD then a
    GET, and one answer for both backends (S3 ``NoSuchKey``, a missing local file)."""
    try:
        return read_bytes(uri)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - "not found" is an answer, the rest re-raised
        if is_not_found(err):
            return None
        raise


def parse_json(uri: str, data: bytes) -> Any:
    """``data`` (the bytes of ``uri``) as JSON; CorruptObjectError naming ``uri`` if it is not."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptObjectError(f"{uri} is not valid JSON: {err}") from err


def read_json(uri: str) -> Any:
    """Parse a JSON object; a corrupt one raises CorruptObjectError naming it."""
    return parse_json(uri, read_bytes(uri))


def read_json_if_exists(uri: str) -> Any:
    """:func:`read_json`, or None when the object does not exist (:func:`read_if_exists`)."""
    data = read_if_exists(uri)
    return None if data is None else parse_json(uri, data)


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=False).encode(), "application/json")


def exists(uri: str) -> bool:
    if is_s3(uri):
        return etag(uri) is not None
    return Path(uri).exists()


def _wrap_transient(err: Exception) -> Exception:
    """A TransientError for what :func:`is_transient` calls transient, else the error."""
    return TransientError(f"S3: {err}") if is_transient(err) else err


def remove(uri: str) -> None:
    """Delete one object or file; no error when it does not exist."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as err:  # noqa: BLE001
            if not is_not_found(err):
                raise _wrap_transient(err) from err
        return
    Path(uri).unlink(missing_ok=True)


def list_uris(prefix: str) -> Iterator[str]:
    """Every object URI under a prefix (s3) or every file under it (local): :func:`list_objects`
    without the metadata."""
    return (o.uri for o in list_objects(prefix))


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing (or HEAD) says about one object, without reading it."""

    uri: str
    size: int
    last_modified: datetime
    etag: str
    #: S3's storage class (HEAD omits it for STANDARD); STANDARD for a local file
    storage_class: str = "STANDARD"


def _local_files(prefix: str) -> Iterator[Path]:
    """Files whose path starts with ``prefix`` (a folder when it ends with ``/``), sorted;
    never the ``.part`` files of a write in progress."""
    folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
    if folder.is_dir():
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.endswith(".part") and (
                    prefix.endswith("/") or str(p).startswith(prefix)):
                yield p


def _local_uri(prefix: str, path: Path) -> str:
    """``path`` spelt from ``prefix`` as given (callers strip ``prefix`` off listed URIs)."""
    folder = prefix if prefix.endswith("/") else str(Path(prefix).parent) + "/"
    return folder + str(path.relative_to(Path(folder)))


def _local_head(uri: str) -> ObjectInfo | None:
    """A local file as an object: its ETag is its size and modification time in ns (changes
    whenever :func:`write_bytes` replaces it)."""
    try:
        st = os.stat(uri)
    except FileNotFoundError:
        return None
    return ObjectInfo(uri, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC),
                      f'"{st.st_size:x}-{st.st_mtime_ns:x}"')


def list_objects(prefix: str) -> Iterator[ObjectInfo]:
    """Every object under an ``s3://`` prefix with its size, LastModified and ETag (1 call per
    1,000 keys: ListObjectsV2 pages); under a local prefix, every file (never a ``.part``)."""
    if not is_s3(prefix):
        for p in _local_files(prefix):
            info = _local_head(str(p))
            if info is not None:
                yield ObjectInfo(_local_uri(prefix, p), info.size, info.last_modified,
                                 info.etag)
        return
    bucket, key = split_s3(prefix)
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    with _s3("list", prefix):
        for page in pages:
            for obj in page.get("Contents", []):
                yield ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]),
                                 obj["LastModified"], obj["ETag"],
                                 obj.get("StorageClass") or "STANDARD")


def list_prefixes(prefix: str) -> list[str]:
    """The "folders" right under an ``s3://`` prefix (Delimiter ``/``), as prefixes."""
    if not is_s3(prefix):
        folder = Path(prefix)
        return sorted(f"{prefix.rstrip('/')}/{p.name}/" for p in folder.iterdir()
                      if p.is_dir()) if folder.is_dir() else []
    bucket, key = split_s3(prefix)
    out = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key,
                                                                       Delimiter="/")
        for page in pages:
            out += [f"s3://{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", [])]
    except Exception as err:  # noqa: BLE001 - re-raised, classified
        raise _wrap_transient(err) from err
    return out


def list_sharded(prefixes: list[str], threads: int = 16) -> list[ObjectInfo]:
    """Every object under several prefixes, listed in parallel (the usual way to list a large
    S3 key space fast: one paginated listing per disjoint prefix)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda p: list(list_objects(p)), prefixes))
    return [o for part in parts for o in part]


def head(uri: str) -> ObjectInfo | None:
    """The object's size, LastModified and ETag; None when it does not exist."""
    if not is_s3(uri):
        return _local_head(uri)
    bucket, key = split_s3(uri)
    with _s3("head", uri):
        try:
            r = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as err:  # noqa: BLE001 - not found is an answer, the rest re-raised
            if is_not_found(err):
                return None
            raise
    return ObjectInfo(uri, int(r["ContentLength"]), r["LastModified"], r["ETag"],
                      r.get("StorageClass") or "STANDARD")


#: CopyObject copies at most 5 GB in one call; larger objects need a multipart copy.
_COPY_LIMIT = 5 * 1024**3


def copy(src: str, dst: str, if_match: str | None = None,
         storage_class: str | None = None) -> None:
    """Server-side copy of one S3 object (metadata and content type kept); with ``if_match``
    only if the source's ETag still is that (``CopySourceIfMatch``), else TransientError.
    ``storage_class``: the copy's S3 storage class (a copy is STANDARD without it, whatever the
    source's). Local files: a hard link where the file system allows it, else a copy."""
    if not is_s3(src) and not is_s3(dst):
        _local_copy(src, dst, if_match)
        return
    sb, sk = split_s3(src)
    db, dk = split_s3(dst)
    client = s3_client()
    try:
        info = head(src)
        if info is None:
            raise InputError(f"cannot copy {src}: it does not exist")
        if if_match and info.etag != if_match:
            raise TransientError(f"{src} changed (ETag {info.etag}, expected {if_match})")
        extra = {"CopySourceIfMatch": if_match} if if_match else {}
        if storage_class:
            extra["StorageClass"] = storage_class
        if info.size < _COPY_LIMIT:
            client.copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk}, **extra)
        else:
            client.copy({"Bucket": sb, "Key": sk}, db, dk, ExtraArgs=extra or None)
    except (InputError, TransientError):
        raise
    except Exception as err:  # noqa: BLE001
        if error_code(err) in {"PreconditionFailed", "412"}:
            raise TransientError(f"{src} changed while being copied: {err}") from err
        raise _wrap_transient(err) from err


def _local_copy(src: str, dst: str, if_match: str | None) -> None:
    import shutil

    info = _local_head(src)
    if info is None:
        raise InputError(f"cannot copy {src}: it does not exist")
    if if_match and info.etag != if_match:
        raise TransientError(f"{src} changed (ETag {info.etag}, expected {if_match})")
    target = Path(dst)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # write_bytes replaces files (new inode): the link stays intact
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(target)


def delete(uris: list[str]) -> None:
    """Delete objects of one bucket (1 call per 1,000 keys)."""
    if not uris:
        return
    if not is_s3(uris[0]):
        for uri in uris:
            remove(uri)
        return
    bucket = split_s3(uris[0])[0]
    keys = [split_s3(u)[1] for u in uris]
    for i in range(0, len(keys), 1000):
        s3_client().delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


#: The environment a rasterio session is made from (its cache key).
_SESSION_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST")


def gdal_env(**options: Any):
    """``rasterio.Env`` with :func:`gdal_env_options` (plus ``options``) and this process's
    rasterio session.

    Built without a session, ``rasterio.Env`` makes a new boto3 Session whenever AWS
    credentials are in the environment, as on Lambda (``rasterio/env.py``: ``Env.__init__``
    calls ``Session.from_environ()``): ~30 ms of CPU each (botocore registers its handlers),
    once per source read because every read opens its own Env in its thread. Measured on the
    test tile's task chain: 822 sessions, 26 s of 320 s. Here the session is made once per set
    of credentials, the same kind rasterio would make (``AWSSession`` when the environment
    holds keys, else ``DummySession``); its credentials stay refreshable
    (``AWSSession.credentials`` freezes them at each Env entry).
    """
    import rasterio

    return rasterio.Env(session=_gdal_session(tuple(os.environ.get(k) for k in _SESSION_ENV)),
                        **{**gdal_env_options(), **options})


@lru_cache(maxsize=8)
def _gdal_session(_environment: tuple):
    from rasterio.session import DummySession, Session

    if "AWS_ACCESS_KEY_ID" in os.environ and "AWS_SECRET_ACCESS_KEY" in os.environ:
        return Session.from_environ()
    return DummySession()


#: GDAL's block cache for source reads (what ``GDAL_CACHEMAX`` is set to, in bytes).
GDAL_CACHE_BYTES = 256 * 2**20


def gdal_env_options() -> dict[str, str | int]:
    """GDAL config for reading COGs efficiently; adds the local S3 endpoint when set.

    GDAL ignores ``AWS_ENDPOINT_URL``: for MiniStack it needs ``AWS_S3_ENDPOINT`` (host:port),
    ``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE``. The template sets ``CLOUDFREE_LOCAL_S3``
    only when its ``Local`` parameter is true; locally ``AWS_ENDPOINT_URL`` is used as a fallback.
    """
    opts = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "GDAL_HTTP_MAX_RETRY": "4",
        "GDAL_HTTP_RETRY_DELAY": "1",
        "VSI_CACHE": "TRUE",
        # bytes: rasterio hands an integer to GDALSetCacheMax64 as it is (its own env.py shows
        # ``rasterio.Env(GDAL_CACHEMAX=128000000)``; 256 was a 256-*byte*
        # block cache: every decimated read of an overview decoded each block once per output
        # row, 0.54 s instead of 0.02 s a sample; tests/unit/test_storage.py checks GDAL's value)
        "GDAL_CACHEMAX": GDAL_CACHE_BYTES,
    }
    endpoint = os.environ.get("CLOUDFREE_LOCAL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        opts.update(AWS_S3_ENDPOINT=parts.netloc, AWS_HTTPS="NO" if parts.scheme == "http" else
                    "YES", AWS_VIRTUAL_HOSTING="FALSE")
    return opts
