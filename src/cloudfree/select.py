"""Search a STAC API for one tile and year, then rank and pick the scenes to composite.

Two steps, kept apart so the second is a pure function that tests can feed with real items:

1. :func:`search_items` asks the API (pystac-client) for the tile's items of one year. The tile is
   searched by its *properties* (``grid:code`` or ``mgrs:*``), never with ``intersects`` (Earth
   Search rejects ``query`` combined with ``intersects``). Whatever the server says it honours,
   every filter is checked again on the client.
2. :func:`select_scenes` drops what does not belong (other collections, tiles, years, months, too
   cloudy, superseded re-publications), ranks the rest by *good-data share* and keeps the N best,
   spreading picks across relative orbits when scores tie. Every dropped item keeps a reason.

Ranking score (0-100, higher is better), from the item's ``s2:*_percentage`` properties::

    score = (100 - nodata) * (1 - (high_proba_clouds + medium_proba_clouds
                                   + cloud_shadow + thin_cirrus + snow_ice) / 100)

Snow/ice counts against a scene like cloud: snow observations enter the composite only where a
pixel has no snow-free clear one (``cloudfree.composite``), so a snow-free scene is worth more. On
permanent snow every scene carries about the same share, and the ranking among them is unchanged.
If one of the four cloud percentages is missing, ``eo:cloud_cover`` stands in for their sum; if that
is missing too the cloud sum is taken as 100 (score 0: unknown quality ranks last). A missing nodata
or snow percentage counts as 0. The sum is clipped to [0, 100]. Scores are rounded to 6 decimals.

Picking rule (deterministic): candidates are ordered by score (desc), datetime (asc), id (asc).
Repeat until N are picked: let ``best`` be the highest remaining score; the *tie band* is every
remaining candidate with ``score >= best - tie_tolerance``; from the band pick the candidate whose
relative orbit has been picked the fewest times so far, ties broken by the candidate order above.
With ``tie_tolerance=0`` this is plain "N highest scores".

Duplicates and datastrips: items are one *acquisition* when their tile, platform and datatake
sensing start (from ``s2:product_uri`` ``MSIL2A_<sensing>``, else ``s2:datatake_id`` without its
``_N…`` baseline, else ``datetime`` to the second) agree. Two cases share that key:

- *re-publications*: Earth Search republishes an acquisition (``_0`` baseline 02.14, ``_1``
  baseline 05.00 in ``../shared/realdata``; same baseline with another sequence,
  cirrus-geo/cirrus-earth-search#4). They cover the same ground: the footprints of the real
  pairs differ by about 0.1 % of the tile (``s2:nodata_pixel_percentage`` 41.98 vs 42.09).
- *datastrip splits*: a datatake is cut into datastrips, and a tile on the boundary is
  delivered as two granules (two products of one datatake and baseline, each covering part of
  the tile, with some overlap: microsoft/PlanetaryComputer#256; "both are good ones. You have
  the upper part in one, and a lower part in the other", olivierhagolle/theia_download#28).

They are told apart by the footprints: the items of one acquisition are taken newest first
(newest processing baseline, then the highest ``s2:sequence`` (or ``_<n>_`` in the id), then the
newest ``s2:generation_time``, then the larger id); an item is kept when more than
``NEW_COVERAGE`` (10 %) of its footprint (item geometry, rasterized on a 1098 m grid over the
tile) lies outside the footprints of the items already kept, else it is dropped as
``superseded-by:<id>`` (the kept item it overlaps most). Without geometries the data coverage
decides: the same ``s2:nodata_pixel_percentage`` (within 1 point) is the same footprint; with
neither, items are re-publications.

When several items of one acquisition are kept, they are granules of ONE observation: each gets
``observation`` = the acquisition id (``<tile>_<platform>_<sensing>``); the composite fuses them
into one layer (odc-stac ``groupby="solar_day"`` style); picking counts them as one candidate
scored ``sum(scores) x min(1, 100 / sum(100 - nodata))`` (their good share, the overlap counted
once when their coverage sums past the whole tile).

Drop reasons: ``other-collection``, ``other-tile``, ``outside-year``, ``superseded-by:<id>``,
``outside-months``, ``max-cloud`` and ``not-selected`` (ranked below the N picked). The checks
run in that order and an item gets the first reason that applies. :func:`select_readable` adds
``unusable:scl <reason>`` for a picked item without a readable SCL (it cannot be masked); the
next-best candidate takes its place.

Assets: :func:`select_readable` checks every asset the plan needs of the picked scenes
(:mod:`cloudfree.assets`). A band asset that is missing or unreadable excludes that scene for
that band only (an :class:`~cloudfree.manifest.Exclusion` with its reason).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .bands import REFLECTANCE_BANDS
from .errors import InputError, NoScenesError, StacApiError
from .grid import Tile, parse_tile

DEFAULT_COLLECTION = "sentinel-2-l2a"
#: Asset keys every selected scene must have: 12 reflectance bands, SCL and the visual image.
REQUIRED_ASSETS: tuple[str, ...] = (*(b.key for b in REFLECTANCE_BANDS), "scl", "visual")
#: Cloud/shadow percentages whose sum lowers the score.
CLOUD_PROPERTIES: tuple[str, ...] = (
    "s2:high_proba_clouds_percentage",
    "s2:medium_proba_clouds_percentage",
    "s2:cloud_shadow_percentage",
    "s2:thin_cirrus_percentage",
)
#: Snow/ice share; it lowers the score like cloud (snow is only a fallback observation).
SNOW_PROPERTY = "s2:snow_ice_percentage"
#: Item properties copied into each scene of the manifest (what later steps may need).
SCENE_PROPERTIES: tuple[str, ...] = (
    "datetime",
    "platform",
    "eo:cloud_cover",
    "s2:nodata_pixel_percentage",
    *CLOUD_PROPERTIES,
    "s2:snow_ice_percentage",
    "s2:processing_baseline",
    "s2:product_uri",
    "s2:datatake_id",
    "s2:generation_time",
    "s2:sequence",
    "earthsearch:boa_offset_applied",
    "grid:code",
    "proj:epsg",
    "proj:code",
)

#: Share of an item's footprint that must lie outside the footprints already kept for its
#: acquisition for it to be another granule (a datastrip split), not a re-publication.
NEW_COVERAGE = 0.1
#: Footprint comparison grid: cells a side over the 109.8 km tile (1098 m cells).
FOOTPRINT_CELLS = 100
#: Without geometries: nodata percentages this close (points) mean the same footprint.
SAME_NODATA_POINTS = 1.0

_PRODUCT_URI_RE = re.compile(r"^(S2[A-D])_MSIL2A_(\d{8}T\d{6})_N(\d{4})_R(\d{3})_T(\w{5})_")
_ORBIT_RE = re.compile(r"_R(\d{3})_")
_SEQUENCE_RE = re.compile(r"_(\d+)_L2A$")
_S3_HTTP_RE = re.compile(
    r"^https://(?P<bucket>[a-z0-9][a-z0-9.\-]*?)\.s3(?:[.\-](?P<region>[a-z0-9\-]+))?"
    r"\.amazonaws\.com/(?P<key>.+)$"
)


# --------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectOptions:
    """How scenes are chosen.

    ``months`` is a set of calendar months of the requested year (1-12); a season may wrap the
    year, e.g. ``(11, 12, 1, 2)`` keeps January, February, November and December of that year.
    ``max_cloud`` is a maximum ``eo:cloud_cover`` (percent). ``tie_tolerance`` is in score points.
    """

    n: int = 16
    months: tuple[int, ...] | None = None
    max_cloud: float | None = None
    collection: str = DEFAULT_COLLECTION
    tie_tolerance: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"n must be >= 1, got {self.n}")
        if self.months is not None:
            months = tuple(int(m) for m in self.months)
            if not months or any(not 1 <= m <= 12 for m in months):
                raise InputError(f"months must be 1-12, got {self.months!r}")
            object.__setattr__(self, "months", months)
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise InputError(f"max_cloud must be within 0-100, got {self.max_cloud}")
        if self.tie_tolerance < 0:
            raise InputError(f"tie_tolerance must be >= 0, got {self.tie_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (months as a list)."""
        d = asdict(self)
        d["months"] = list(self.months) if self.months is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SelectOptions:
        """Inverse of :meth:`to_dict` (unknown keys are an :class:`InputError`)."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown select options: {sorted(unknown)}")
        if data.get("months") is not None:
            data["months"] = tuple(data["months"])
        return cls(**data)


@dataclass
class Scene:
    """One selected source item, as the manifest records it."""

    id: str
    datetime: str
    score: float
    relative_orbit: int | None
    processing_baseline: str | None
    boa_offset_applied: bool | None
    collection: str
    assets: dict[str, str]
    properties: dict[str, Any] = field(default_factory=dict)
    href: str | None = None  # the source item's own URL (its ``self`` link), if known
    harmonization: dict[str, Any] | None = None  # filled later by cloudfree.harmonize
    observation: str | None = None  # shared by the granules of one split acquisition

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["observation"] is None:  # only granules of a split acquisition carry it
            del d["observation"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Selection:
    """The scenes picked for one tile and year, and every dropped item with its reason."""

    tile: str
    year: int
    options: SelectOptions
    scenes: list[Scene]
    dropped: list[dict[str, str]]
    api_url: str | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The scene manifest (see docs/architecture.md); JSON-ready."""
        return {
            "tile": self.tile,
            "year": self.year,
            "collection": self.options.collection,
            "api_url": self.api_url,
            "options": self.options.to_dict(),
            "scenes": [s.to_dict() for s in self.scenes],
            "dropped": [dict(d) for d in self.dropped],
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Selection:
        """Rebuild a Selection from :meth:`to_manifest` output."""
        try:
            return cls(
                tile=manifest["tile"],
                year=int(manifest["year"]),
                options=SelectOptions.from_dict(manifest.get("options")),
                scenes=[Scene.from_dict(s) for s in manifest["scenes"]],
                dropped=list(manifest.get("dropped", [])),
                api_url=manifest.get("api_url"),
            )
        except (KeyError, TypeError) as err:
            raise InputError(f"not a scene manifest: {err}") from err


# --------------------------------------------------------------------------------------------
# Small helpers on item dicts
# --------------------------------------------------------------------------------------------
def normalize_href(href: str) -> str:
    """``https://{bucket}.s3[.{region}].amazonaws.com/{key}`` -> ``s3://{bucket}/{key}``.

    Any other URL (e.g. a local ``http://127.0.0.1:4566/bucket/key``) or path is returned as is.
    """
    m = _S3_HTTP_RE.match(href)
    if not m:
        return href
    return f"s3://{m.group('bucket')}/{m.group('key')}"


def parse_datetime(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or offset; naive means UTC) into an aware datetime."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as err:
        raise InputError(f"not an RFC 3339 datetime: {value!r}") from err
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def item_datetime(item: dict[str, Any]) -> datetime | None:
    """The item's ``datetime`` (or ``start_datetime``), or None."""
    props = item.get("properties", {})
    value = props.get("datetime") or props.get("start_datetime")
    return parse_datetime(value) if value else None


def item_tile(item: dict[str, Any]) -> str | None:
    """The MGRS tile id of an item from ``grid:code``, ``mgrs:*``, ``s2:mgrs_tile`` or the URI."""
    props = item.get("properties", {})
    candidates = [props.get("grid:code"), props.get("s2:mgrs_tile")]
    if all(k in props for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")):
        candidates.append(
            f"{int(props['mgrs:utm_zone']):02d}{props['mgrs:latitude_band']}"
            f"{props['mgrs:grid_square']}"
        )
    m = _PRODUCT_URI_RE.match(props.get("s2:product_uri") or "")
    if m:
        candidates.append(m.group(5))
    for value in candidates:
        if value:
            try:
                return parse_tile(value).id
            except InputError:
                continue
    return None


def relative_orbit(props: dict[str, Any]) -> int | None:
    """Relative orbit from ``sat:relative_orbit`` or the ``_R065_`` of ``s2:product_uri``."""
    if props.get("sat:relative_orbit") is not None:
        return int(props["sat:relative_orbit"])
    m = _ORBIT_RE.search(props.get("s2:product_uri") or "")
    return int(m.group(1)) if m else None


def processing_baseline(props: dict[str, Any]) -> str | None:
    """``s2:processing_baseline`` (e.g. ``05.00``), else the ``_N0500_`` of the product URI."""
    if props.get("s2:processing_baseline"):
        return str(props["s2:processing_baseline"])
    m = _PRODUCT_URI_RE.match(props.get("s2:product_uri") or "")
    return f"{m.group(3)[:2]}.{m.group(3)[2:]}" if m else None


def _baseline_key(baseline: str | None) -> tuple[int, ...]:
    if not baseline:
        return (-1,)
    try:
        return tuple(int(p) for p in baseline.split("."))
    except ValueError:
        return (-1,)


def _sequence(item: dict[str, Any]) -> int:
    seq = item.get("properties", {}).get("s2:sequence")
    if seq is not None:
        try:
            return int(seq)
        except (TypeError, ValueError):
            pass
    m = _SEQUENCE_RE.search(item.get("id", ""))
    return int(m.group(1)) if m else -1


def acquisition_key(item: dict[str, Any]) -> tuple[str, ...]:
    """What identifies one acquisition of one tile, whatever its processing baseline."""
    props = item.get("properties", {})
    tile = item_tile(item) or ""
    m = _PRODUCT_URI_RE.match(props.get("s2:product_uri") or "")
    if m:
        return (tile, m.group(1), m.group(2))
    datatake = props.get("s2:datatake_id")
    if datatake:
        return (tile, re.sub(r"_N\d\d\.\d\d$", "", datatake))
    dt = item_datetime(item)
    stamp = dt.strftime("%Y%m%dT%H%M%S") if dt else item.get("id", "")
    return (tile, str(props.get("platform", "")), stamp)


def score(props: dict[str, Any]) -> float:
    """Good-data share (0-100) of an item from its properties: nodata, cloud, shadow, cirrus
    and snow/ice lower it (see module docstring)."""
    nodata = float(props.get("s2:nodata_pixel_percentage") or 0.0)
    if all(props.get(k) is not None for k in CLOUD_PROPERTIES):
        cloud = sum(float(props[k]) for k in CLOUD_PROPERTIES)
    elif props.get("eo:cloud_cover") is not None:
        cloud = float(props["eo:cloud_cover"])
    else:
        cloud = 100.0
    cloud += float(props.get(SNOW_PROPERTY) or 0.0)
    cloud = min(max(cloud, 0.0), 100.0)
    return round((100.0 - nodata) * (1.0 - cloud / 100.0), 6)


def _boa_flag(props: dict[str, Any]) -> bool | None:
    value = props.get("earthsearch:boa_offset_applied")
    return bool(value) if value is not None else None


def _self_href(item: dict[str, Any]) -> str | None:
    for link in item.get("links", []):
        if link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return None


def to_scene(item: dict[str, Any]) -> Scene:
    """The manifest record of one item (assets normalised to ``s3://`` where possible)."""
    props = item.get("properties", {})
    assets = item.get("assets", {})
    dt = item_datetime(item)
    return Scene(
        id=item["id"],
        datetime=dt.isoformat().replace("+00:00", "Z") if dt else "",
        score=score(props),
        relative_orbit=relative_orbit(props),
        processing_baseline=processing_baseline(props),
        boa_offset_applied=_boa_flag(props),
        collection=item.get("collection", ""),
        assets={k: normalize_href(assets[k]["href"]) for k in REQUIRED_ASSETS if k in assets},
        # "collection" is copied in too: cloudfree.harmonize.decide(properties) reads it there.
        properties={
            **{k: props[k] for k in SCENE_PROPERTIES if k in props},
            "collection": item.get("collection", ""),
        },
        href=_self_href(item),
    )


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------
def _first_reason(
    item: dict[str, Any], tile: Tile, year: int, options: SelectOptions
) -> str | None:
    """Reason to drop an item before de-duplication (collection, tile, year), or None."""
    if item.get("collection") != options.collection:
        return "other-collection"
    if item_tile(item) != tile.id:
        return "other-tile"
    dt = item_datetime(item)
    if dt is None or dt.astimezone(UTC).year != year:
        return "outside-year"
    return None


def _late_reason(item: dict[str, Any], options: SelectOptions) -> str | None:
    """Reason to drop a kept acquisition (months, cloud), or None.

    Assets are not judged here: a missing or unreadable asset costs a scene-band, and a scene
    without a usable SCL is replaced by the next-best one (:func:`select_readable`).
    """
    props = item.get("properties", {})
    dt = item_datetime(item)
    months = options.months
    if months is not None and (dt is None or dt.astimezone(UTC).month not in months):
        return "outside-months"
    if options.max_cloud is not None:
        cloud = props.get("eo:cloud_cover")
        if cloud is None or float(cloud) > options.max_cloud:
            return "max-cloud"
    return None


def _newest_first(item: dict[str, Any]) -> tuple:
    props = item.get("properties", {})
    return (
        _baseline_key(processing_baseline(props)),
        _sequence(item),
        str(props.get("s2:generation_time") or ""),
        item.get("id", ""),
    )


def footprint_cells(item: dict[str, Any], tile: Tile) -> Any:
    """The item's geometry rasterized on a ``FOOTPRINT_CELLS`` grid over the tile (bool
    array; a cell counts when its centre is inside), or None without a usable geometry."""
    geometry = item.get("geometry")
    if not geometry:
        return None
    import numpy as np
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    cell = int(tile.shape(1)[0]) // FOOTPRINT_CELLS
    try:
        utm = transform_geom("EPSG:4326", tile.crs, geometry)
        cells = rasterize([(utm, 1)], out_shape=(FOOTPRINT_CELLS, FOOTPRINT_CELLS),
                          transform=tile.transform(cell), fill=0, dtype="uint8")
    except Exception:  # noqa: BLE001 - a broken geometry: fall back to the data coverage
        return None
    return np.asarray(cells, dtype=bool)


def _nodata(item: dict[str, Any]) -> float | None:
    value = item.get("properties", {}).get("s2:nodata_pixel_percentage")
    return None if value is None else float(value)


def duplicate_of(item: dict[str, Any], kept: list[dict[str, Any]], tile: Tile | None
                 ) -> int | None:
    """Index of the ``kept`` item (of the same acquisition) that ``item`` re-publishes, or None
    when ``item`` covers ground they do not: another granule of a split acquisition (module
    docstring). The index is that of the kept footprint overlapping ``item`` most."""
    if tile is not None:
        cells = footprint_cells(item, tile)
        others = [footprint_cells(k, tile) for k in kept]
        if cells is not None and all(o is not None for o in others):
            area = int(cells.sum())
            covered = others[0].copy()
            for o in others[1:]:
                covered |= o
            if area and int((cells & ~covered).sum()) > NEW_COVERAGE * area:
                return None
            overlaps = [int((cells & o).sum()) for o in others]
            return overlaps.index(max(overlaps))
    mine = _nodata(item)
    theirs = [_nodata(k) for k in kept]
    if mine is None or any(t is None for t in theirs):
        return 0
    gaps = [abs(mine - t) for t in theirs]  # type: ignore[operator]
    return gaps.index(min(gaps)) if min(gaps) < SAME_NODATA_POINTS else None


class Deduplicated(NamedTuple):
    """What :func:`collapse_duplicates` keeps and drops, and which kept items are granules of
    one observation (item id -> observation id)."""

    kept: list[dict[str, Any]]
    dropped: list[dict[str, str]]
    observations: dict[str, str]


def collapse_duplicates(items: list[dict[str, Any]], tile: Tile | str | None = None
                        ) -> Deduplicated:
    """Keep the newest item of each re-published acquisition and every granule of a split one.

    See the module docstring: items of one acquisition are taken newest first; one that adds
    no more than ``NEW_COVERAGE`` of its footprint to those kept is ``superseded-by`` the kept
    one it overlaps most; when two or more are kept they share an ``observation`` id. ``tile``
    enables the footprint comparison (default: the items' own tile); kept items keep the input
    order.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(acquisition_key(item), []).append(item)
    kept, dropped, observations = [], [], {}
    for key, group in groups.items():
        group = sorted(group, key=_newest_first, reverse=True)
        the_tile = _tile_or_none(tile if tile is not None else item_tile(group[0]))
        mine = [group[0]]
        for other in group[1:]:
            same = duplicate_of(other, mine, the_tile)
            if same is None:
                mine.append(other)
            else:
                dropped.append({"id": other["id"], "reason": f"superseded-by:{mine[same]['id']}"})
        if len(mine) > 1:
            observations.update((it["id"], "_".join(str(k) for k in key if k)) for it in mine)
        kept.extend(mine)
    order = {id(item): i for i, item in enumerate(items)}
    kept.sort(key=lambda it: order[id(it)])
    return Deduplicated(kept, dropped, observations)


def _tile_or_none(tile: Tile | str | None) -> Tile | None:
    if tile is None:
        return None
    try:
        return parse_tile(tile)
    except InputError:
        return None


def observation_score(scenes: list[Scene]) -> float:
    """Score of the granules of one observation taken together (module docstring)."""
    total = sum(s.score for s in scenes)
    cover = sum(100.0 - float(s.properties.get("s2:nodata_pixel_percentage") or 0.0)
                for s in scenes)
    return round(total * min(1.0, 100.0 / cover), 6) if cover > 0 else 0.0


def _rank_key(scene: Scene) -> tuple:
    return (-scene.score, scene.datetime, scene.id)


def pick(scenes: list[Scene], n: int, tie_tolerance: float) -> list[Scene]:
    """Pick ``n`` scenes by score, spreading relative orbits within the tie band (module doc)."""
    remaining = sorted(scenes, key=_rank_key)
    picked: list[Scene] = []
    per_orbit: Counter[int | None] = Counter()
    while remaining and len(picked) < n:
        best = remaining[0].score
        band = [s for s in remaining if s.score >= best - tie_tolerance]
        choice = min(band, key=lambda s: (per_orbit[s.relative_orbit], *_rank_key(s)))
        picked.append(choice)
        per_orbit[choice.relative_orbit] += 1
        remaining.remove(choice)
    return picked


def pick_observations(scenes: list[Scene], n: int, tie_tolerance: float) -> list[Scene]:
    """:func:`pick` where the granules of one observation are one candidate (scored with
    :func:`observation_score`) and count once towards ``n``; returns every picked granule."""
    members: dict[str, list[Scene]] = {}
    units: list[Scene] = []
    for scene in sorted(scenes, key=lambda s: (s.datetime, s.id)):
        if scene.observation is None:
            units.append(scene)
        elif scene.observation in members:
            members[scene.observation].append(scene)
        else:
            members[scene.observation] = [scene]
    for granules in members.values():
        units.append(replace(granules[0], score=observation_score(granules)))
    out: list[Scene] = []
    for unit in pick(units, n, tie_tolerance):
        out.extend(members.get(unit.observation, [unit]) if unit.observation else [unit])
    return out


def _why_empty(tile: Tile, year: int, n_items: int, dropped: list[dict[str, str]]) -> str:
    if not n_items:
        return f"no scene for tile {tile.id} in {year}: the search returned no item"
    reasons = Counter(d["reason"].split(":")[0] for d in dropped)
    summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return f"no usable scene for tile {tile.id} in {year}: all {n_items} items dropped ({summary})"


def select_scenes(
    items: list[dict[str, Any]],
    tile: str | Tile,
    year: int,
    options: SelectOptions | None = None,
    *,
    api_url: str | None = None,
) -> Selection:
    """Filter, de-duplicate, rank and pick the scenes of one tile and year.

    ``items`` are STAC item dicts (e.g. from :func:`search_items`). ``api_url`` is only recorded in
    the manifest (for ``derived_from`` links). Raises :class:`NoScenesError` when nothing is left.
    """
    tile = parse_tile(tile)
    options = options or SelectOptions()
    dropped: list[dict[str, str]] = []
    candidates = []
    for item in items:
        reason = _first_reason(item, tile, int(year), options)
        if reason:
            dropped.append({"id": item.get("id", ""), "reason": reason})
        else:
            candidates.append(item)
    dedup = collapse_duplicates(candidates, tile)
    dropped.extend(dedup.dropped)
    scenes = []
    for item in dedup.kept:
        reason = _late_reason(item, options)
        if reason:
            dropped.append({"id": item["id"], "reason": reason})
        else:
            scenes.append(replace(to_scene(item), observation=dedup.observations.get(item["id"])))
    picked = pick_observations(scenes, options.n, options.tie_tolerance)
    picked_ids = {s.id for s in picked}
    dropped.extend(
        {"id": s.id, "reason": "not-selected"}
        for s in sorted(scenes, key=_rank_key)
        if s.id not in picked_ids
    )
    if not picked:
        raise NoScenesError(_why_empty(tile, int(year), len(items), dropped))
    return Selection(tile.id, int(year), options, picked, dropped, api_url)


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------
def _contiguous_window(months: tuple[int, ...] | None) -> tuple[int, int] | None:
    """(first, last) month if ``months`` is one non-wrapping run, else None (search the year)."""
    if not months:
        return None
    ms = sorted(set(months))
    if ms != list(range(ms[0], ms[-1] + 1)):
        return None
    return ms[0], ms[-1]


def datetime_range(year: int, months: tuple[int, ...] | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the search: the whole year, or a contiguous month window inside it."""
    window = _contiguous_window(months) or (1, 12)
    start = datetime(year, window[0], 1, tzinfo=UTC)
    end_month = window[1] + 1
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if end_month == 13
        else datetime(year, end_month, 1, tzinfo=UTC)
    )
    return start, end


def _interval(start: datetime, end: datetime) -> str:
    """Closed RFC 3339 interval ``start/end`` with ``end`` one millisecond before ``end``."""
    last = end.timestamp() - 0.001
    stop = datetime.fromtimestamp(last, tz=UTC)
    return f"{start:%Y-%m-%dT%H:%M:%SZ}/{stop:%Y-%m-%dT%H:%M:%S}.{stop.microsecond // 1000:03d}Z"


def tile_filter(tile: Tile, max_cloud: float | None = None, by: str = "grid:code") -> dict:
    """CQL2-JSON filter for the tile (by ``grid:code`` or ``mgrs``) and an optional cloud cap."""
    if by == "grid:code":
        args: list[dict] = [{"op": "=", "args": [{"property": "grid:code"}, tile.grid_code]}]
    elif by == "mgrs":
        args = [
            {"op": "=", "args": [{"property": "mgrs:utm_zone"}, tile.zone]},
            {"op": "=", "args": [{"property": "mgrs:latitude_band"}, tile.latitude_band]},
            {"op": "=", "args": [{"property": "mgrs:grid_square"}, tile.grid_square]},
        ]
    else:
        raise InputError(f"search tile by 'grid:code' or 'mgrs', not {by!r}")
    if max_cloud is not None:
        args.append({"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]})
    return args[0] if len(args) == 1 else {"op": "and", "args": args}


def tile_query(tile: Tile, max_cloud: float | None = None, by: str = "grid:code") -> dict:
    """The same as :func:`tile_filter` in the STAC API ``query`` extension's language."""
    if by == "grid:code":
        query: dict[str, dict] = {"grid:code": {"eq": tile.grid_code}}
    elif by == "mgrs":
        query = {
            "mgrs:utm_zone": {"eq": tile.zone},
            "mgrs:latitude_band": {"eq": tile.latitude_band},
            "mgrs:grid_square": {"eq": tile.grid_square},
        }
    else:
        raise InputError(f"search tile by 'grid:code' or 'mgrs', not {by!r}")
    if max_cloud is not None:
        query["eo:cloud_cover"] = {"lte": max_cloud}
    return query


def _conforms(client: Any, name: str) -> bool:
    try:
        return bool(client.conforms_to(name))
    except Exception:  # noqa: BLE001 - a client without conformance info supports nothing
        return False


def build_search_params(
    client: Any,
    tile: Tile,
    year: int,
    *,
    collection: str,
    limit: int,
    max_items: int | None,
    months: tuple[int, ...] | None,
    max_cloud: float | None,
    by: str = "grid:code",
) -> dict[str, Any]:
    """Keyword arguments for ``client.search`` (filter if advertised, else query; sortby if so)."""
    start, end = datetime_range(year, months)
    params: dict[str, Any] = {
        "collections": [collection],
        "datetime": _interval(start, end),
        "limit": limit,
        "max_items": max_items,
    }
    if _conforms(client, "FILTER"):
        params["filter"] = tile_filter(tile, max_cloud, by)
        params["filter_lang"] = "cql2-json"
    else:
        params["query"] = tile_query(tile, max_cloud, by)
    if _conforms(client, "SORT"):
        params["sortby"] = [{"field": "properties.eo:cloud_cover", "direction": "asc"}]
    return params


def _recheck(
    item: dict[str, Any],
    tile: Tile,
    collection: str,
    start: datetime,
    end: datetime,
    months: tuple[int, ...] | None,
    max_cloud: float | None,
) -> bool:
    """True when the item passes every filter the server was asked to apply."""
    if item.get("collection") != collection or item_tile(item) != tile.id:
        return False
    dt = item_datetime(item)
    if dt is None or not start <= dt < end:
        return False
    if months and dt.astimezone(UTC).month not in months:
        return False
    if max_cloud is not None:
        cloud = item.get("properties", {}).get("eo:cloud_cover")
        return cloud is not None and float(cloud) <= max_cloud
    return True


#: Seconds to connect to, and to wait for each answer of, the STAC API (requests' ``timeout``
#: tuple). Earth Search answers a 50-item page in about a second; without a timeout a stalled
#: connection would hold the select Lambda until its own timeout (pystac-client's default is
#: none: ``StacApiIO(timeout=None)``).
STAC_TIMEOUT_S = (5.0, 30.0)
#: Answers retried in-process with backoff: throttling and server errors (a burst of them
#: succeeds on retry instead of failing the tile). 403 too: Earth Search throttles with
#: ``{"message":"Forbidden"}`` (Element84/earth-search#19, 2023-10-17: ~300 searches from
#: Lambdas got it, and its maintainer answered "There is some throttling and concurrency limits
#: in place, which could be causing your error", advising pystac-client's retries; an API
#: behind a WAF rate rule answers 403, not 429). TileConcurrency's 112 selects start together.
#: A real 403 (a private API) then fails after the same few retries (~7 s).
RETRY_STATUSES = (403, 429, 500, 502, 503, 504)


def stac_retry(attempts: int = 4) -> Any:
    """The urllib3 retry policy of STAC API requests.

    ``attempts`` retries of connection errors and of ``RETRY_STATUSES`` answers, with
    exponential backoff (urllib3 2.x: 0, 1, 2, 4 s; ``Retry-After`` honoured, capped at 30 s);
    a read timeout is retried once. POST is retried too: a STAC search is a read.
    pystac-client mounts it on its session (``StacApiIO(max_retries=...)``, whose default
    ``5`` retries connection errors only: a bare int has an empty ``status_forcelist``).
    Worst case per request, everything timing out: ``(attempts + 1) * 5`` s to connect, or
    ``2 * 30`` s to read, plus the backoff: well inside the select Lambda's 300 s.
    """
    from urllib3 import Retry

    return Retry(total=attempts, connect=attempts, read=1, status=attempts, other=0,
                 allowed_methods=frozenset({"GET", "POST"}), status_forcelist=RETRY_STATUSES,
                 backoff_factor=0.5, backoff_max=8, respect_retry_after_header=True,
                 retry_after_max=30, raise_on_status=True)


def open_client(api_url: str, timeout: float | tuple[float, float] = STAC_TIMEOUT_S,
                attempts: int = 4) -> Any:
    """A pystac-client ``Client`` with a request timeout and the retry policy above.

    The timeout goes to ``Client.open`` too: given a ``stac_io``, pystac-client 0.9.1's
    ``Client.from_file`` calls ``stac_io.update(..., timeout=timeout)``, which would reset the
    IO's timeout to ``None`` (pystac_client/client.py; seen here: a stalled search then waited
    the full stall, not the timeout).
    """
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(timeout=timeout, max_retries=stac_retry(attempts))
    return Client.open(api_url, stac_io=io, timeout=timeout)


def search_items(
    api_url: str,
    tile: str | Tile,
    year: int,
    *,
    collection: str = DEFAULT_COLLECTION,
    limit: int = 50,
    max_items: int | None = None,
    months: tuple[int, ...] | None = None,
    max_cloud: float | None = None,
    client: Any = None,
    by: str = "grid:code",
    timeout: float | tuple[float, float] = STAC_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Search ``api_url`` for the items of ``tile`` in ``year`` and return them as dicts.

    The tile is matched by ``grid:code`` (``by="grid:code"``) or the three ``mgrs:*`` properties
    (``by="mgrs"``) in a CQL2-JSON ``filter`` when the API conforms to *filter*, else in ``query``.
    Results are sorted by ``eo:cloud_cover`` when the API conforms to *sort*. Every filter is
    re-checked on the client, so a server that ignores one still gives the right answer.
    ``client`` may be an already opened ``pystac_client.Client`` (or a test double); otherwise
    one is opened with ``timeout`` (seconds, or (connect, read)) and :func:`stac_retry`.
    Network or API failures, timeouts and malformed answers raise :class:`StacApiError`
    (transient: the state machine retries it, then records the tile as failed).
    """
    tile = parse_tile(tile)
    year = int(year)
    if not 1 <= limit <= 10_000:
        raise InputError(f"limit must be within 1-10000, got {limit}")
    from pystac import STACError
    from pystac_client.exceptions import APIError
    from requests import RequestException

    try:
        if client is None:
            client = open_client(api_url, timeout)
        params = build_search_params(
            client, tile, year, collection=collection, limit=limit, max_items=max_items,
            months=months, max_cloud=max_cloud, by=by,
        )  # fmt: skip
        found = list(client.search(**params).items_as_dicts())
        if not all(isinstance(item, dict) for item in found):
            raise TypeError("features are not all JSON objects")
    except (APIError, RequestException, OSError, json.JSONDecodeError) as err:
        raise StacApiError(f"StacApiError: STAC search failed at {api_url} for {tile.id} {year} "
                           f"(timeout {timeout} s, retried): {err}") from err
    except (STACError, KeyError, TypeError, AttributeError) as err:  # JSON, but not STAC
        raise StacApiError(f"StacApiError: STAC search at {api_url} for {tile.id} {year} got a "
                           f"malformed answer: {type(err).__name__}: {err}") from err
    start, end = datetime_range(year, months)
    months_set = tuple(months) if months else None
    return [
        item
        for item in found
        if _recheck(item, tile, collection, start, end, months_set, max_cloud)
    ]


# --------------------------------------------------------------------------------------------
# Selection with readable assets
# --------------------------------------------------------------------------------------------
@dataclass
class CheckedSelection:
    """A selection whose assets were checked: scene-bands and whole scenes left out, and why."""

    selection: Selection
    excluded: list[Any]  # cloudfree.manifest.Exclusion, one per unreadable scene-band
    excluded_scenes: list[dict[str, str]]  # picked but unusable (no readable SCL): id, reason


def select_readable(
    items: list[dict[str, Any]],
    tile: str | Tile,
    year: int,
    options: SelectOptions | None = None,
    *,
    api_url: str | None = None,
    check: Any = None,
) -> CheckedSelection:
    """:func:`select_scenes`, then check the picked scenes' assets; replace unusable scenes.

    ``check(scenes, keys) -> {(scene id, key): reason}`` defaults to
    :func:`cloudfree.assets.check_assets`. A picked scene whose SCL is missing or unreadable is
    dropped (``unusable:scl <reason>``) and the selection is redone without it, so the tile
    still gets N scenes when candidates remain; only newly picked scenes are checked again.
    Raises :class:`NoScenesError` when nothing is left and
    :class:`~cloudfree.errors.UnreadableSourceError` when a band has no readable scene.
    """
    from .assets import check_assets
    from .manifest import PLAN_ASSETS, SCL_KEY, Exclusion

    check = check or check_assets
    tile = parse_tile(tile)
    unusable: dict[str, str] = {}
    verdicts: dict[tuple[str, str], str] = {}
    checked: set[str] = set()
    while True:
        pool = [it for it in items if it.get("id") not in unusable]
        try:
            sel = select_scenes(pool, tile, year, options, api_url=api_url)
        except NoScenesError as err:
            if not unusable:
                raise
            from .errors import UnreadableSourceError

            raise UnreadableSourceError(f"{err}; {len(unusable)} picked item(s) had no readable "
                                        f"SCL: {unusable}") from err
        new = [s for s in sel.scenes if s.id not in checked]
        verdicts.update(check([s.to_dict() for s in new], PLAN_ASSETS) if new else {})
        checked.update(s.id for s in new)
        bad = {s.id: verdicts[(s.id, SCL_KEY)] for s in new if (s.id, SCL_KEY) in verdicts}
        if not bad:
            break
        unusable.update(bad)
    sel.dropped.extend({"id": i, "reason": f"unusable:scl {r}"} for i, r in sorted(
        unusable.items()))
    kept = {s.id for s in sel.scenes}
    excluded = sorted(Exclusion(key, sid, reason) for (sid, key), reason in verdicts.items()
                      if sid in kept and key != SCL_KEY)
    _check_every_band_readable(sel, excluded, PLAN_ASSETS)
    return CheckedSelection(sel, excluded, [{"id": i, "reason": f"scl: {r}"}
                                            for i, r in sorted(unusable.items())])


def _check_every_band_readable(sel: Selection, excluded: list[Any], keys: tuple[str, ...]
                               ) -> None:
    from .errors import UnreadableSourceError

    n = len(sel.scenes)
    for key in keys:
        lost = [e for e in excluded if e.band == key]
        if len(lost) >= n:
            raise UnreadableSourceError(
                f"{sel.tile} {sel.year}: no readable {key} asset in any of the {n} scenes: "
                + "; ".join(f"{e.scene}: {e.reason}" for e in lost))
