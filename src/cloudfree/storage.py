"""Reading and writing objects by URI: ``s3://bucket/key`` or a local path.

One place builds the boto3 client (honouring ``AWS_ENDPOINT_URL`` for MiniStack) and the GDAL
environment rasterio needs to read ``s3://`` COGs from a local endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
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


@lru_cache(maxsize=4)
def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; ``AWS_ENDPOINT_URL`` (MiniStack) is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32,
                 s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
                        config=cfg)


def is_not_found(err: Exception) -> bool:
    """True when a botocore error says the object (or key) does not exist."""
    code = getattr(err, "response", {}).get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound"}


def _wrap_transient(err: Exception) -> Exception:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
    if code in {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "503", "500"}:
        return TransientError(f"S3 transient error: {err}")
    return err


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as err:  # noqa: BLE001 - re-raised, classified
            raise _wrap_transient(err) from err
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def upload_file(path: str | Path, uri: str, content_type: str | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        s3_client().upload_file(str(path), bucket, key, **extra)
    else:
        write_bytes(uri, Path(path).read_bytes())


def download_file(uri: str, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().download_file(bucket, key, str(path))
    else:
        Path(path).write_bytes(Path(uri).read_bytes())


def read_json(uri: str) -> Any:
    """Parse a JSON object; a corrupt one raises CorruptObjectError naming it."""
    try:
        return json.loads(read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptObjectError(f"{uri} is not valid JSON: {err}") from err


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=False).encode(), "application/json")


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as err:  # noqa: BLE001
            if is_not_found(err):
                return False
            raise
    return Path(uri).exists()


def list_uris(prefix: str) -> Iterator[str]:
    """Every object URI under a prefix (s3) or every file under a folder (local)."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}"
    else:
        root = Path(prefix)
        if root.is_dir():
            yield from (str(p) for p in sorted(root.rglob("*")) if p.is_file())


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
        "GDAL_CACHEMAX": 256,
    }
    endpoint = os.environ.get("CLOUDFREE_LOCAL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        opts.update(AWS_S3_ENDPOINT=parts.netloc, AWS_HTTPS="NO" if parts.scheme == "http" else
                    "YES", AWS_VIRTUAL_HOSTING="FALSE")
    return opts
