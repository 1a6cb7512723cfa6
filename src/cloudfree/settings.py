"""Configuration read once from the environment (the template sets these on every function)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import ConfigError
from .layout import DATA_PREFIX, Layout

DEFAULT_STAC_API = "https://earth-search.aws.element84.com/v1"
DEFAULT_MASK = (0, 1, 3, 8, 9, 10, 11)
#: S3 storage classes the published COGs may be written in (the template's PublicStorageClass).
#: INTELLIGENT_TIERING (default): S3 moves an object nobody read for 30 consecutive days to its
#: Infrequent Access tier and after 90 days to Archive Instant Access; a read brings it back to
#: Frequent Access. AWS's API reference (PutBucketIntelligentTieringConfiguration): these are
#: "three low latency and high throughput access tiers", the asynchronous Archive tiers need a
#: bucket configuration (the template makes none), and an object under 128 KB "is not monitored
#: and not eligible for auto-tiering ... always charged at the Frequent Access tier rates". The
#: tiers and their days: docs.aws.amazon.com/AmazonS3/latest/dev/storage-class-intro.html
#: (#sc-dynamic-data-access); no retrieval fee, no minimum storage duration: aws.amazon.com/s3/
#: pricing. STANDARD: the same price every month. Classes with a retrieval fee (STANDARD_IA,
#: GLACIER_IR) are not offered: every public read of a COG would cost us per GB.
PUBLIC_STORAGE_CLASSES = ("INTELLIGENT_TIERING", "STANDARD")
#: Compressions of the published COGs (the template's CogCompression; ``assemble.cog_profile``).
#: DEFLATE (default): every TIFF reader decodes it. LERC_ZSTD (lossless, MAX_Z_ERROR 0): ~6 %
#: fewer bytes on real Sentinel-2 pixels and ~1/3 of the encoding CPU (``bench/bench_codecs.py``),
#: but readers need GDAL >= 2.4 with zstd (QGIS, rasterio, ArcGIS) or geotiff.js >= 2.1; libtiff
#: alone (Pillow, MATLAB) cannot read it.
COG_COMPRESSIONS = ("DEFLATE", "LERC_ZSTD")


def _int_tuple(value: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"{name} must be a comma-separated list of integers: {value!r}") from err


def _outlier_setting(value: str) -> str:
    """``OUTLIER_REJECTION`` as ``"on"`` / ``"off"`` (any spelling ``outliers.parse_rule``
    takes; ConfigError on anything else)."""
    from .outliers import parse_rule

    return "on" if parse_rule(value).enabled else "off"


def _one_of(value: str, name: str, allowed: tuple[str, ...]) -> str:
    """``value`` as one of ``allowed`` (upper case, ``-`` as ``_``); ConfigError otherwise."""
    got = str(value).strip().upper().replace("-", "_")
    if got not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return got


def public_storage_class(value: str) -> str:
    """``PUBLIC_STORAGE_CLASS`` checked against :data:`PUBLIC_STORAGE_CLASSES` (any case)."""
    return _one_of(value, "PUBLIC_STORAGE_CLASS", PUBLIC_STORAGE_CLASSES)


def cog_compression(value: str) -> str:
    """``COG_COMPRESSION`` checked against :data:`COG_COMPRESSIONS` (any case)."""
    return _one_of(value, "COG_COMPRESSION", COG_COMPRESSIONS)


@dataclass(frozen=True)
class Settings:
    """Everything a task needs to know about its deployment."""

    work_bucket: str
    data_bucket: str
    control_bucket: str
    stac_api_url: str = DEFAULT_STAC_API
    source_collection: str = "sentinel-2-l2a"
    scene_count: int = 16
    mask_classes: tuple[int, ...] = DEFAULT_MASK
    median_memory_mb: int = 3008
    assemble_memory_mb: int = 3008
    state_machine_arn: str | None = None
    data_prefix: str = DATA_PREFIX
    public_base_url: str | None = None
    stac_timeout_s: float = 30.0  # seconds to wait for each STAC API answer (select)
    local_root: str | None = None  # buckets as folders under this path (one-machine mode)
    outlier_rejection: str = "on"  # cloudfree.outliers: "on" (default) or "off"
    #: the published COGs' S3 storage class (PUBLIC_STORAGE_CLASSES)
    public_storage_class: str = "INTELLIGENT_TIERING"
    #: the published COGs' compression (COG_COMPRESSIONS)
    cog_compression: str = "DEFLATE"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.work_bucket, self.data_bucket, self.control_bucket, self.data_prefix,
                      self.local_root)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build from ``WORK_BUCKET``, ``DATA_BUCKET``, ``CONTROL_BUCKET`` (required) and more."""
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("WORK_BUCKET", "DATA_BUCKET", "CONTROL_BUCKET") if not env.get(k)]
        if missing:
            raise ConfigError(f"missing required environment variable(s): {', '.join(missing)}")
        try:
            return cls(
                work_bucket=env["WORK_BUCKET"],
                data_bucket=env["DATA_BUCKET"],
                control_bucket=env["CONTROL_BUCKET"],
                stac_api_url=env.get("STAC_API_URL") or DEFAULT_STAC_API,
                source_collection=env.get("SOURCE_COLLECTION") or "sentinel-2-l2a",
                scene_count=int(env.get("SCENE_COUNT") or 16),
                mask_classes=_int_tuple(env.get("MASK_CLASSES") or "0,1,3,8,9,10,11",
                                        "MASK_CLASSES"),
                median_memory_mb=int(env.get("MEDIAN_MEMORY_MB") or 3008),
                assemble_memory_mb=int(env.get("ASSEMBLE_MEMORY_MB") or 3008),
                state_machine_arn=env.get("STATE_MACHINE_ARN") or None,
                data_prefix=env.get("DATA_PREFIX") or DATA_PREFIX,
                public_base_url=env.get("PUBLIC_BASE_URL") or None,
                stac_timeout_s=float(env.get("STAC_TIMEOUT_SECONDS") or 30),
                outlier_rejection=_outlier_setting(env.get("OUTLIER_REJECTION") or "on"),
                public_storage_class=public_storage_class(
                    env.get("PUBLIC_STORAGE_CLASS") or PUBLIC_STORAGE_CLASSES[0]),
                cog_compression=cog_compression(env.get("COG_COMPRESSION")
                                                or COG_COMPRESSIONS[0]),
            )
        except ValueError as err:
            raise ConfigError(f"bad numeric setting: {err}") from err
