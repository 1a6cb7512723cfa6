"""The output STAC: one item per tile and year, one collection, and offline validation.

Inputs of :func:`build_item` (all JSON-friendly, so a Lambda can read them from S3):

- ``assets``: ``{key: AssetInfo}`` for the 12 reflectance keys (Earth Search names: ``coastal``,
  ``blue``, … ``swir22``), ``visual`` and ``count``. :class:`AssetInfo` holds the COG's href, its
  grid in EPSG:3857 (``shape`` rows/cols and the 6 affine ``transform`` coefficients), and
  optionally ``size`` (bytes) and ``checksum`` (``file:checksum`` multihash hex, see
  :func:`multihash_sha256`). A plain dict with the same keys is accepted too.
- ``manifest``: the scene manifest (``cloudfree.manifest.Manifest.to_dict()``, or
  ``Selection.to_manifest()`` with each scene's ``harmonization`` filled in). Provenance of what
  was left out: ``excluded`` (scene-bands: ``band``, ``scene``, ``reason``, ``stage``) becomes
  each scene record's ``skipped`` list; ``excluded_scenes`` (picked items that could not be
  masked: ``id``, ``reason``) becomes ``cloudfree:excluded_scenes``.
- ``stats``: :class:`ItemStats` (or its dict): ``good_pixels`` = pixels of the tile footprint with
  at least one valid observation, ``footprint_pixels`` = pixels in the footprint (both on the count
  grid), ``observations`` = :class:`ObservationStats` of the per-pixel valid-observation count
  over the footprint, ``contributions`` = per scene id, the share (0-1) of all valid
  observations that came from that scene, and ``snow_pixels`` = pixels of the footprint whose
  value is the median of snow/ice observations only (no snow-free clear one existed).

The ``count`` asset is uint8: bits 0-6 hold the number of observations in the median (at most
64), bit 7 (``COUNT_SNOW_FLAG`` = 128) is set where those were snow/ice observations only (so
``count & 127`` is the count, ``count & 128`` the snow flag); described in the asset's
``description`` and ``cloudfree:flags``. The item's ``cloudfree:snow_pixel_fraction`` is
``snow_pixels / footprint_pixels``.

Pixel convention recorded in ``raster:bands``: uint16 DN, nodata 0, ``scale 0.0001, offset 0``
(reflectance = DN / 10000, the BOA offset already removed). Outputs live on the web-mercator
tile-matrix grid; the zoom level of every asset is written in ``cloudfree:zoom`` and summarised in
the item's ``cloudfree:resolution`` text.

Validation is offline: the JSON Schemas shipped in ``cloudfree/schemas`` (see its NOTICE) are
resolved with ``referencing``; no schema is ever fetched from the network.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pystac
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.mgrs import MgrsExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from .bands import REFLECTANCE_BANDS, VISUAL_BANDS, Band, get_band
from .errors import InputError, ValidationError
from .grid import Tile, parse_tile
from .layout import COLLECTION_ID
from .mask import COUNT_SNOW_FLAG

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
STAC_VERSION = "1.1.0"
OUTPUT_CRS = "EPSG:3857"
REFLECTANCE_SCALE = 0.0001
REFLECTANCE_OFFSET = 0.0
ASSET_KEYS: tuple[str, ...] = (*(b.key for b in REFLECTANCE_BANDS), "visual", "count")
DEFAULT_API_URL = "https://earth-search.aws.element84.com/v1"
LICENSE_HREF = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
PROCESSING_LEVEL = "L3"
#: The collection relative to an item written at ``Layout.item(year, tile)``.
COLLECTION_HREF = "../../collection.json"
#: Web-mercator pixel size (m) at zoom 0 for 256 px tiles.
_Z0_PIXEL = 2 * math.pi * 6378137 / 256


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssetInfo:
    """One output COG: where it is and its grid in EPSG:3857."""

    href: str
    shape: tuple[int, int]  # (rows, cols)
    transform: tuple[float, ...]  # affine a, b, c, d, e, f (EPSG:3857 metres)
    size: int | None = None  # bytes (file:size)
    checksum: str | None = None  # multihash hex (file:checksum), e.g. "1220" + sha256 hex

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | AssetInfo) -> AssetInfo:
        """Accept an AssetInfo or a dict with the same keys."""
        if isinstance(data, AssetInfo):
            return data
        try:
            return cls(
                href=str(data["href"]),
                shape=(int(data["shape"][0]), int(data["shape"][1])),
                transform=tuple(float(v) for v in data["transform"][:6]),
                size=None if data.get("size") is None else int(data["size"]),
                checksum=data.get("checksum"),
            )
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise InputError(f"bad asset info {data!r}: {err}") from err

    @property
    def pixel_size(self) -> float:
        """Pixel width in EPSG:3857 metres."""
        return abs(self.transform[0])

    @property
    def zoom(self) -> int | None:
        """Web-mercator zoom level the pixel size matches (None if it matches none)."""
        z = math.log2(_Z0_PIXEL / self.pixel_size)
        return round(z) if abs(z - round(z)) < 0.01 else None


@dataclass(frozen=True)
class ObservationStats:
    """Statistics of the per-pixel count of valid observations over the tile footprint."""

    min: int
    mean: float
    max: int
    percentiles: dict[str, float] = field(default_factory=dict)  # e.g. {"p10": 3, "p50": 9}

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "mean": round(self.mean, 4),
            "max": self.max,
            **{k: v for k, v in sorted(self.percentiles.items(), key=lambda kv: _pct(kv[0]))},
        }


def _pct(key: str) -> float:
    try:
        return float(key.lstrip("p"))
    except ValueError:
        return math.inf


@dataclass(frozen=True)
class ItemStats:
    """What the item says about the composite's quality (see module docstring)."""

    good_pixels: int
    footprint_pixels: int
    observations: ObservationStats
    contributions: dict[str, float] = field(default_factory=dict)
    snow_pixels: int = 0
    outliers: dict[str, int] = field(default_factory=dict)  # scene -> pixels rejected
    masked: dict[str, int] = field(default_factory=dict)  # scene -> pixels SCL masked

    @property
    def good_pixel_fraction(self) -> float:
        if self.footprint_pixels <= 0:
            raise InputError("footprint_pixels must be > 0")
        return round(self.good_pixels / self.footprint_pixels, 6)

    @property
    def snow_pixel_fraction(self) -> float:
        """Share of the footprint whose value came from snow/ice observations only."""
        if self.footprint_pixels <= 0:
            raise InputError("footprint_pixels must be > 0")
        return round(self.snow_pixels / self.footprint_pixels, 6)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | ItemStats) -> ItemStats:
        if isinstance(data, ItemStats):
            return data
        try:
            obs = data["observations"]
            if not isinstance(obs, ObservationStats):
                obs = ObservationStats(
                    min=int(obs["min"]),
                    mean=float(obs["mean"]),
                    max=int(obs["max"]),
                    percentiles=dict(obs.get("percentiles", {})),
                )
            return cls(
                good_pixels=int(data["good_pixels"]),
                footprint_pixels=int(data["footprint_pixels"]),
                observations=obs,
                contributions={k: float(v) for k, v in data.get("contributions", {}).items()},
                snow_pixels=int(data.get("snow_pixels") or 0),
                outliers={k: int(v) for k, v in (data.get("outliers") or {}).items()},
                masked={k: int(v) for k, v in (data.get("masked") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"bad item stats: {err}") from err


def multihash_sha256(data: bytes | str | Path) -> str:
    """``file:checksum`` value (multihash hex, sha2-256) of bytes or a local file."""
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "1220" + h.hexdigest()


# --------------------------------------------------------------------------------------------
# Assets
# --------------------------------------------------------------------------------------------
def _eo_band(band: Band) -> EOBand:
    return EOBand.create(
        name=band.s2_name,
        common_name=band.common_name,
        description=band.description,
        center_wavelength=band.center_wavelength,
        full_width_half_max=band.full_width_half_max,
    )


def _ground_resolution(info: AssetInfo, lat: float) -> float:
    return round(info.pixel_size * math.cos(math.radians(lat)), 2)


def _asset_base(key: str, info: AssetInfo, title: str, roles: list[str]) -> pystac.Asset:
    asset = pystac.Asset(href=info.href, media_type=pystac.MediaType.COG, title=title, roles=roles)
    proj = ProjectionExtension.ext(asset)
    proj.code = OUTPUT_CRS
    proj.shape = list(info.shape)
    proj.transform = list(info.transform)
    if info.size is not None or info.checksum is not None:
        FileExtension.ext(asset).apply(size=info.size, checksum=info.checksum)
    if info.zoom is not None:
        asset.extra_fields["cloudfree:zoom"] = info.zoom
    return asset


def reflectance_asset(key: str, info: AssetInfo, lat: float) -> pystac.Asset:
    """Asset of one reflectance band's median COG."""
    band = get_band(key)
    asset = _asset_base(key, info, f"{band.description} - annual median", ["data", "reflectance"])
    RasterExtension.ext(asset).apply([
        RasterBand.create(
            nodata=0, data_type=DataType.UINT16, spatial_resolution=_ground_resolution(info, lat),
            scale=REFLECTANCE_SCALE, offset=REFLECTANCE_OFFSET,
        )
    ])  # fmt: skip
    EOExtension.ext(asset).apply(bands=[_eo_band(band)])
    asset.extra_fields["cloudfree:source_resolution"] = band.resolution
    return asset


def visual_asset(info: AssetInfo, lat: float) -> pystac.Asset:
    """Asset of the true-colour (RGB uint8) median COG."""
    asset = _asset_base("visual", info, "True color image - annual median", ["visual"])
    res = _ground_resolution(info, lat)
    RasterExtension.ext(asset).apply(
        [RasterBand.create(nodata=0, data_type=DataType.UINT8, spatial_resolution=res)] * 3
    )
    EOExtension.ext(asset).apply(bands=[_eo_band(get_band(k)) for k in VISUAL_BANDS])
    asset.extra_fields["cloudfree:source_resolution"] = 10
    return asset


def count_asset(info: AssetInfo, lat: float) -> pystac.Asset:
    """Asset of the per-pixel count of valid observations (uint8; 0 = none, flagged nodata)."""
    asset = _asset_base("count", info, "Number of valid observations", ["data"])
    asset.description = (
        "Per-pixel number of valid (unmasked) observations that entered the median, "
        "counted on the 10 m bands; 0 means no valid observation (nodata in the bands). "
        f"Bit 7 ({COUNT_SNOW_FLAG}) is a flag: set where the pixel had no snow-free clear "
        "observation and its value is the median of its snow/ice observations (glaciers, "
        f"permanent snow). count = value & {COUNT_SNOW_FLAG - 1}; snow = value & "
        f"{COUNT_SNOW_FLAG}."
    )
    asset.extra_fields["cloudfree:flags"] = [
        {"bit": 7, "value": COUNT_SNOW_FLAG, "name": "snow",
         "description": "median of snow/ice observations only (no snow-free clear one)"},
    ]
    res = _ground_resolution(info, lat)
    RasterExtension.ext(asset).apply(
        [RasterBand.create(data_type=DataType.UINT8, nodata=0, spatial_resolution=res)]
    )
    return asset


def build_asset(key: str, info: AssetInfo | Mapping[str, Any], lat: float) -> pystac.Asset:
    """The asset for one output key (reflectance band, ``visual`` or ``count``)."""
    info = AssetInfo.from_dict(info)
    if key == "visual":
        return visual_asset(info, lat)
    if key == "count":
        return count_asset(info, lat)
    return reflectance_asset(key, info, lat)


# --------------------------------------------------------------------------------------------
# Item
# --------------------------------------------------------------------------------------------
def year_range(year: int) -> tuple[datetime, datetime]:
    """First and last instant (to the second) of a calendar year, UTC."""
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)


def source_item_href(scene: Mapping[str, Any], api_url: str) -> str:
    """STAC API URL of a source item: ``{api}/collections/{collection}/items/{id}``."""
    collection = scene.get("collection") or "sentinel-2-l2a"
    return f"{api_url.rstrip('/')}/collections/{collection}/items/{scene['id']}"


def _skipped(manifest: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Scene id -> the scene-bands left out of the composite (``manifest["excluded"]``)."""
    out: dict[str, list[dict[str, str]]] = {}
    for e in sorted(manifest.get("excluded") or [], key=lambda e: (e["scene"], e["band"])):
        out.setdefault(e["scene"], []).append(
            {"band": e["band"], "reason": e["reason"], "stage": e.get("stage", "select")})
    return out


def _scene_record(scene: Mapping[str, Any], contributions: Mapping[str, float],
                  skipped: list[dict[str, str]] | None = None,
                  stats: ItemStats | None = None) -> dict[str, Any]:
    harm = scene.get("harmonization") or None
    share = float(contributions.get(scene["id"], 0.0))
    record = {
        "id": scene["id"],
        "datetime": scene.get("datetime"),
        "score": scene.get("score"),
        "relative_orbit": scene.get("relative_orbit"),
        "processing_baseline": scene.get("processing_baseline"),
        "contributed": share > 0,
        "contribution": round(share, 6),
        "harmonization": (
            {"offset": harm.get("offset"), "reason": harm.get("reason")} if harm else None
        ),
        "skipped": list(skipped or []),
    }
    if stats is not None and (stats.outliers or stats.masked):
        # on the count grid: pixels of this scene SCL masked, and observations SCL let through
        # that the outlier test rejected (missed cloud, haze, shadow; cloudfree.outliers)
        record["masked_pixels"] = int(stats.masked.get(scene["id"], 0))
        record["outlier_pixels"] = int(stats.outliers.get(scene["id"], 0))
    if scene.get("observation"):  # a granule fused with the others of its split acquisition
        record["observation"] = scene["observation"]
    return record


def resolution_note(assets: Mapping[str, AssetInfo]) -> str:
    """Human-readable statement of the output grid (web-mercator zoom per asset group)."""
    groups: dict[int | None, list[str]] = {}
    for key, info in assets.items():
        groups.setdefault(info.zoom, []).append(key)
    parts = [
        f"zoom {z if z is not None else '?'} ({_Z0_PIXEL / 2**z:.2f} m/px at the equator): "
        f"{', '.join(keys)}"
        if z is not None
        else f"no web-mercator zoom level: {', '.join(keys)}"
        for z, keys in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    ]
    return (
        "Assets are reprojected to EPSG:3857 on the web-mercator tile-matrix grid; "
        + "; ".join(parts)
        + ". Native Sentinel-2 resolutions are 10, 20 and 60 m (cloudfree:source_resolution)."
    )


def lineage(manifest: Mapping[str, Any]) -> str:
    """The ``processing:lineage`` text."""
    opts = manifest.get("options") or {}
    return (
        f"Per-pixel median of the valid (SCL-masked) observations of the {len(manifest['scenes'])} "
        f"best {manifest.get('collection', 'sentinel-2-l2a')} scenes of MGRS tile "
        f"{manifest['tile']} in {manifest['year']} (ranked by good-data share, at most "
        f"{opts.get('n', 16)}), harmonized to the pre-04.00 convention (no +1000 BOA offset), "
        "reprojected to EPSG:3857 and written as cloud-optimized GeoTIFFs. "
        "Contains modified Copernicus Sentinel data."
    )


def _check_asset_keys(assets: Mapping[str, Any]) -> None:
    missing = [k for k in ASSET_KEYS if k not in assets]
    unknown = [k for k in assets if k not in ASSET_KEYS]
    if missing or unknown:
        raise InputError(f"item assets: missing {missing}, unknown {unknown}")


def _properties(
    tile: Tile,
    manifest: Mapping[str, Any],
    stats: ItemStats,
    infos: Mapping[str, AssetInfo],
    software_version: str,
    created: datetime,
) -> dict[str, Any]:
    skipped = _skipped(manifest)
    scenes = [_scene_record(s, stats.contributions, skipped.get(s["id"]), stats)
              for s in manifest["scenes"]]
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "created": stamp,
        "updated": stamp,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "cloudfree:good_pixel_fraction": stats.good_pixel_fraction,
        "cloudfree:snow_pixel_fraction": stats.snow_pixel_fraction,
        "cloudfree:observations": stats.observations.to_dict(),
        "cloudfree:scene_count": len(scenes),
        "cloudfree:scenes": scenes,
        "cloudfree:excluded_scenes": [dict(e) for e in manifest.get("excluded_scenes") or []],
        "cloudfree:selection": dict(manifest.get("options") or {}),
        "cloudfree:resolution": resolution_note(infos),
        "processing:level": PROCESSING_LEVEL,
        "processing:lineage": lineage(manifest),
        "processing:software": {"cloudfree": software_version},
        "processing:datetime": stamp,
    }


def build_item(
    tile: str | Tile,
    year: int,
    assets: Mapping[str, AssetInfo | Mapping[str, Any]],
    manifest: Mapping[str, Any],
    stats: ItemStats | Mapping[str, Any],
    *,
    software_version: str,
    api_url: str | None = None,
    created: datetime | None = None,
    collection_href: str = COLLECTION_HREF,
    data_bounds: Sequence[float] | None = None,
) -> pystac.Item:
    """The output item ``{tile}_{year}`` (see module docstring for the inputs).

    ``data_bounds`` (the tile's UTM CRS): the rectangle the COGs were cropped to (the observed
    cells, :func:`cloudfree.assemble.data_crop`); the item's geometry and bbox are that
    rectangle's outline, not the whole tile's, so a STAC search does not find a coastal tile's
    item over open sea it holds no pixel of. None: the whole tile.

    ``api_url`` (else ``manifest["api_url"]``, else Earth Search) builds the ``derived_from``
    links of scenes whose manifest record has no ``href``. ``created`` defaults to now (UTC).
    ``collection_href`` is the ``collection``/``parent`` link, by default relative to the item's
    place in :class:`cloudfree.layout.Layout` (``{prefix}/{year}/{tile}/{tile}_{year}.json``).
    """
    tile = parse_tile(tile)
    year = int(year)
    _check_asset_keys(assets)
    infos = {k: AssetInfo.from_dict(v) for k, v in assets.items()}
    stats = ItemStats.from_dict(stats)
    created = created or datetime.now(UTC)
    # A MultiPolygon split at 180 deg and a bbox with west > east for tiles that cross the
    # antimeridian (RFC 7946 sec. 3.1.9 and 5.2; see grid.Tile.footprint).
    geometry = tile.footprint(bounds=data_bounds)
    bbox = tile.bbox(bounds=data_bounds)
    start, end = year_range(year)
    item = pystac.Item(
        id=f"{tile.id}_{year}",
        geometry=geometry,
        bbox=bbox,
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties=_properties(tile, manifest, stats, infos, software_version, created),
        collection=COLLECTION_ID,
    )
    item.stac_extensions.append(PROCESSING_EXTENSION)
    GridExtension.ext(item, add_if_missing=True).code = tile.grid_code
    MgrsExtension.ext(item, add_if_missing=True).apply(
        latitude_band=tile.latitude_band, grid_square=tile.grid_square, utm_zone=tile.zone
    )
    center_lat = (bbox[1] + bbox[3]) / 2
    for key in ASSET_KEYS:
        item.add_asset(key, build_asset(key, infos[key], center_lat))
    for ext in (EOExtension, RasterExtension, ProjectionExtension):
        ext.add_to(item)
    if any(i.size is not None or i.checksum is not None for i in infos.values()):
        FileExtension.add_to(item)
    _add_links(item, manifest, api_url, collection_href)
    return item


def _add_links(
    item: pystac.Item, manifest: Mapping[str, Any], api_url: str | None, collection_href: str
) -> None:
    api = api_url or manifest.get("api_url") or DEFAULT_API_URL
    item.add_link(pystac.Link("collection", collection_href, pystac.MediaType.JSON))
    item.add_link(pystac.Link("parent", collection_href, pystac.MediaType.JSON))
    for scene in manifest["scenes"]:
        href = scene.get("href") or source_item_href(scene, api)
        item.add_link(pystac.Link("derived_from", href, pystac.MediaType.GEOJSON, scene["id"]))
    item.add_link(
        pystac.Link("license", LICENSE_HREF, pystac.MediaType.HTML, "Sentinel data legal notice")
    )


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------
def build_collection(
    *,
    software_version: str,
    years: tuple[int, int] | None = None,
    bbox: list[float] | None = None,
    description: str | None = None,
) -> pystac.Collection:
    """The ``sentinel-2-annual-median`` collection (extent: ``years`` inclusive, ``bbox``)."""
    interval = [None, None]
    if years:
        interval = [year_range(years[0])[0], year_range(years[1])[1]]
    collection = pystac.Collection(
        id=COLLECTION_ID,
        title="Sentinel-2 L2A annual median composites",
        description=description
        or (
            "Annual cloud-free composites of Sentinel-2 L2A per MGRS tile: for every pixel, the "
            "median of its valid observations in the best scenes of the year; 12 reflectance "
            "bands, a true-colour image and a per-pixel observation count, as cloud-optimized "
            "GeoTIFFs in EPSG:3857. Contains modified Copernicus Sentinel data."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox or [-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([interval]),
        ),
        license="other",
        keywords=["sentinel-2", "composite", "median", "cloud-free", "cog"],
        providers=[
            pystac.Provider(
                "ESA",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                url="https://sentinel.esa.int",
            ),
            pystac.Provider(
                "cloudfree",
                roles=[pystac.ProviderRole.PROCESSOR],
                extra_fields={"processing:software": {"cloudfree": software_version}},
            ),
        ],  # fmt: skip
    )
    collection.stac_extensions.append(PROCESSING_EXTENSION)
    collection.extra_fields["processing:level"] = PROCESSING_LEVEL
    collection.extra_fields["item_assets"] = _item_assets()
    collection.add_link(pystac.Link("license", LICENSE_HREF, pystac.MediaType.HTML))
    return collection


def _item_assets() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for band in REFLECTANCE_BANDS:
        out[band.key] = {
            "type": pystac.MediaType.COG, "roles": ["data", "reflectance"],
            "title": f"{band.description} - annual median",
        }  # fmt: skip
    out["visual"] = {"type": pystac.MediaType.COG, "roles": ["visual"], "title": "True color image"}
    out["count"] = {"type": pystac.MediaType.COG, "roles": ["data"], "title": "Valid observations"}
    return out


# --------------------------------------------------------------------------------------------
# Offline validation
# --------------------------------------------------------------------------------------------
def schema_root() -> Path:
    """Folder of the packaged schemas (URL ``https://HOST/PATH`` -> ``HOST/PATH``)."""
    return Path(str(resources.files("cloudfree") / "schemas"))


def schema_path(url: str) -> Path:
    """Local file of a schema URL (scheme and fragment dropped)."""
    parts = urlsplit(urldefrag(url)[0])
    return schema_root() / parts.netloc / parts.path.lstrip("/")


@cache
def _load_schema(url: str) -> dict[str, Any]:
    path = schema_path(url)
    if not path.is_file():
        raise ValidationError(f"no offline copy of schema {url} (see cloudfree/schemas/NOTICE)")
    return json.loads(path.read_text())


@lru_cache(maxsize=1)
def _registry():  # -> referencing.Registry
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    def retrieve(uri: str) -> Resource:
        try:
            contents = _load_schema(uri)
        except ValidationError as err:
            raise NoSuchResource(ref=uri) from err
        return Resource.from_contents(contents, default_specification=DRAFT7)

    return Registry(retrieve=retrieve)


def _core_schema_url(data: Mapping[str, Any]) -> str:
    version = data.get("stac_version")
    kind = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(
        data.get("type", "")
    )
    if kind is None:
        raise ValidationError(f"not a STAC item/collection/catalog: type={data.get('type')!r}")
    return f"https://schemas.stacspec.org/v{version}/{kind}-spec/json-schema/{kind}.json"


def _first_error(url: str, data: Mapping[str, Any]):  # -> jsonschema.ValidationError | None
    import jsonschema
    from jsonschema.exceptions import best_match

    _load_schema(url)  # a clear error when the schema is not shipped
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    validator = jsonschema.Draft7Validator(
        {"$ref": url}, registry=_registry(), format_checker=checker
    )
    try:
        error = best_match(validator.iter_errors(data))
    except Exception as err:  # noqa: BLE001 - unresolvable $ref etc.
        raise ValidationError(f"{url}: cannot validate offline: {err}") from err
    # Extension schemas branch with anyOf/oneOf (item vs collection): report the deepest cause.
    while error is not None and error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def validate(obj: pystac.STACObject | Mapping[str, Any]) -> None:
    """Validate an item/collection (pystac object or dict) against its core schema and every
    ``stac_extensions`` schema, offline. Raises :class:`ValidationError` naming the schema and the
    JSON path of the first error."""
    data = obj.to_dict(include_self_link=False) if isinstance(obj, pystac.STACObject) else obj
    data = json.loads(json.dumps(data, default=str))  # plain JSON types only (no datetimes)
    for url in [_core_schema_url(data), *data.get("stac_extensions", [])]:
        error = _first_error(url, data)
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "<root>"
            err = ValidationError(f"{data.get('id')}: {url}: at {path}: {error.message}")
            err.path = path  # type: ignore[attr-defined]
            err.schema_url = url  # type: ignore[attr-defined]
            raise err


def validate_item(item: pystac.Item | Mapping[str, Any]) -> None:
    """Validate an output item offline (see :func:`validate`)."""
    validate(item)


def validate_collection(collection: pystac.Collection | Mapping[str, Any]) -> None:
    """Validate a collection offline (see :func:`validate`)."""
    validate(collection)
