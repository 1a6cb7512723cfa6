"""The scene manifest: what *select* decided for one tile and year, written once, read by all.

:class:`Manifest` is the one typed form of ``Layout.manifest(year, tile)``. *select* builds it
(scenes with their harmonization and evidence, dropped items, excluded scenes and scene-bands
with reasons, mask classes and the window plan per band) and writes it; *median*, *assemble*,
*complete* (cost figures), *publish* (provenance) and the CLI (progress) read it. Nothing
downstream recomputes the window plan from ``MedianMemoryMB``: it is fixed here, at select.

Scenes stay JSON records (dicts), the shape the composite, harmonize and STAC code share:
``{"id", "datetime", "score", "relative_orbit", "processing_baseline", "collection",
"assets": {key: href}, "properties", "href", "harmonization": {"offset", "reason",
"evidence"}, "observation": str | None}``. Scenes that share an ``observation`` id are granules
of one acquisition (a datastrip split) and are fused into one observation by the composite;
``None`` means the scene is its own observation.

Exclusions come in two kinds:

- whole scenes (``excluded_scenes``): a picked item that cannot be masked (no SCL asset, or the
  SCL is unreadable) is left out and replaced by the next-best candidate at select;
- scene-bands (``excluded``): one asset of a kept scene cannot be read (``404``,
  ``corrupt: …``); the scene still counts for every other band. Failures found later, during the
  median, are recorded as *exclusion records* under the tile's work prefix
  (:func:`record_exclusion`) and merged in by :func:`band_exclusions`, so every window of a band
  is computed with the same final scene set.

A manifest with a missing or different ``version``, or a malformed shape, is an
:class:`~cloudfree.errors.InputError` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import storage
from .bands import OUTPUT_BANDS, get_band
from .errors import CorruptObjectError, InputError
from .windows import Window, batch_windows, plan_windows

#: Schema version of the manifest JSON (1 was the untyped dict of earlier releases).
MANIFEST_VERSION = 2
#: Windows one median invocation handles (fewer Step Functions transitions per tile).
WINDOWS_PER_BATCH = 8
#: Squares of the shared outlier decision one *decide* invocation computes (a tile has 16 of
#: 1536 px on its 20 m grid, ``outliers.decision_squares``): 4 invocations per tile, one round
#: at any BandConcurrency of 4 or more (the default is 7), the *Decide* map's MaxConcurrency.
SQUARES_PER_DECIDE = 4
#: The SCL asset key: a scene without a readable SCL cannot be masked at all.
SCL_KEY = "scl"
#: Asset keys the plan reads per scene: every output band plus the SCL.
PLAN_ASSETS: tuple[str, ...] = (*OUTPUT_BANDS, SCL_KEY)


@dataclass(frozen=True, order=True)
class Exclusion:
    """One scene-band left out of the composite, and why (``stage``: select or median)."""

    band: str
    scene: str
    reason: str
    stage: str = "select"

    def to_dict(self) -> dict[str, str]:
        return {"band": self.band, "scene": self.scene, "reason": self.reason,
                "stage": self.stage}

    @classmethod
    def from_dict(cls, data: Any) -> Exclusion:
        if not isinstance(data, dict):
            raise InputError(f"exclusion must be an object, got {data!r}")
        try:
            return cls(str(data["band"]), str(data["scene"]), str(data["reason"]),
                       str(data.get("stage", "select")))
        except KeyError as err:
            raise InputError(f"exclusion {data!r} lacks {err}") from err


@dataclass(frozen=True)
class BandPlan:
    """A band's windows (block-aligned, row-major) and their grouping per median invocation."""

    windows: tuple[Window, ...]
    batches: tuple[tuple[int, ...], ...]  # indices into ``windows``, one tuple per invocation

    def __post_init__(self) -> None:
        flat = [i for b in self.batches for i in b]
        if sorted(flat) != list(range(len(self.windows))):
            raise InputError("band plan batches must cover every window exactly once")

    @classmethod
    def build(cls, band: str, n_scenes: int, memory_mb: int,
              per_batch: int = WINDOWS_PER_BATCH) -> BandPlan:
        """The plan for ``n_scenes`` scenes at ``memory_mb`` (see ``windows.plan_windows``)."""
        windows = plan_windows(get_band(band), n_scenes, memory_mb)
        index = {w: i for i, w in enumerate(windows)}
        batches = batch_windows(windows, per_batch)
        return cls(tuple(windows), tuple(tuple(index[w] for w in b) for b in batches))

    def batch(self, i: int) -> list[Window]:
        """The windows of batch ``i`` (InputError when out of range)."""
        if not 0 <= int(i) < len(self.batches):
            raise InputError(f"batch {i} out of range ({len(self.batches)} batches)")
        return [self.windows[j] for j in self.batches[int(i)]]

    def to_dict(self) -> dict[str, Any]:
        return {"windows": [[w.row_off, w.col_off, w.height, w.width] for w in self.windows],
                "batches": [list(b) for b in self.batches]}

    @classmethod
    def from_dict(cls, data: Any) -> BandPlan:
        try:
            return cls(tuple(Window.from_dict(w) for w in data["windows"]),
                       tuple(tuple(int(i) for i in b) for b in data["batches"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"bad band plan: {err!r}") from err


def decision_plan() -> BandPlan:
    """The squares of the shared outlier decision (``outliers.decision_squares`` on the
    nominal 20 m grid) and their batches, one per *decide* invocation. Every tile's 20 m grid
    is 5490 x 5490 px from the tile's origin: a real Earth Search item's ``scl`` asset has
    ``proj:shape`` [5490, 5490] and the same origin as its 10 m ``blue`` [10980, 10980]
    (../shared/realdata/rio-tiler-pds/.../S2A_29RKH_20200219_0_L2A.json)."""
    from .outliers import SHADOW_BAND, decision_squares

    squares = decision_squares(get_band(SHADOW_BAND).size)
    index = {w: i for i, w in enumerate(squares)}
    return BandPlan(tuple(squares), tuple(tuple(index[w] for w in b)
                                          for b in batch_windows(squares, SQUARES_PER_DECIDE)))


def _check_scene(scene: Any) -> dict[str, Any]:
    if not isinstance(scene, dict) or not isinstance(scene.get("id"), str):
        raise InputError(f"manifest scene must be an object with an 'id', got {scene!r:.200}")
    if not isinstance(scene.get("assets"), dict):
        raise InputError(f"manifest scene {scene['id']} has no 'assets' object")
    harm = scene.get("harmonization")
    if harm is not None and not (isinstance(harm, dict) and "offset" in harm):
        raise InputError(f"manifest scene {scene['id']}: harmonization needs an 'offset'")
    out = dict(scene)
    out.setdefault("observation", None)
    return out


def work_order(band: str, batches: int, windows: int) -> tuple[int, int, int, int]:
    """Sort key of the bands in a tile's work (:meth:`Manifest.work`): finest resolution, then
    the most median batches, the most windows and the most bytes a pixel first (the visual
    image: 3 bytes, more to decode and encode than a 10 m band's 2); a stable sort keeps
    ``OUTPUT_BANDS`` order within."""
    b = get_band(band)
    return b.resolution, -batches, -windows, -b.count * np.dtype(b.dtype).itemsize


@dataclass
class Manifest:
    """The typed scene manifest of one tile and year (see the module docstring)."""

    tile: str
    year: int
    scenes: list[dict[str, Any]]
    plan: dict[str, BandPlan]
    mask_classes: tuple[int, ...]
    median_memory_mb: int
    collection: str = "sentinel-2-l2a"
    api_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    excluded_scenes: list[dict[str, str]] = field(default_factory=list)
    version: int = MANIFEST_VERSION

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, selection: dict[str, Any], *, mask_classes: tuple[int, ...] | list[int],
              median_memory_mb: int, excluded: list[Exclusion] | None = None,
              excluded_scenes: list[dict[str, str]] | None = None) -> Manifest:
        """From ``Selection.to_manifest()`` (harmonized): fix the window plan once, here."""
        scenes = [_check_scene(s) for s in selection["scenes"]]
        if not scenes:
            raise InputError("a manifest needs at least one scene")
        plan = {b: BandPlan.build(b, len(scenes), median_memory_mb) for b in OUTPUT_BANDS}
        return cls(tile=selection["tile"], year=int(selection["year"]), scenes=scenes,
                   plan=plan, mask_classes=tuple(int(c) for c in mask_classes),
                   median_memory_mb=int(median_memory_mb),
                   collection=selection.get("collection") or "sentinel-2-l2a",
                   api_url=selection.get("api_url"), options=dict(selection.get("options") or {}),
                   dropped=list(selection.get("dropped") or []),
                   excluded=sorted(excluded or []),
                   excluded_scenes=list(excluded_scenes or []))

    # --- reading the plan --------------------------------------------------------------------
    def band_plan(self, band: str) -> BandPlan:
        try:
            return self.plan[band]
        except KeyError as err:
            raise InputError(f"the manifest of {self.tile} {self.year} has no plan for band "
                             f"{band!r}; planned: {sorted(self.plan)}") from err

    def work(self) -> list[dict[str, Any]]:
        """What *select* returns per band: the batch indices only (small state payload).

        Longest first: the state machine's band Map starts its items in this order as its
        ``BandConcurrency`` slots free up, so the band that ends last is the one started last.
        Listed in ``OUTPUT_BANDS`` order, the visual image (the most batches, 10 m) started
        after eleven others and set the tile's critical path; finest resolution first, then
        the most batches (a list schedule, longest processing time first: ``costs``
        simulates it)."""
        bands = [b for b in OUTPUT_BANDS if b in self.plan]
        bands.sort(key=lambda b: work_order(b, len(self.plan[b].batches),
                                            len(self.plan[b].windows)))
        return [{"band": b, "batches": list(range(len(self.plan[b].batches)))} for b in bands]

    def decision_plan(self) -> BandPlan:
        """The tile's outlier decision plan (:func:`decision_plan`: the same for every
        manifest; the tile grid does not vary)."""
        return decision_plan()

    def decision_scenes(self) -> list[dict[str, Any]]:
        """The scene set the *decide* step decides for: the one most output bands use (all of
        them, unless select excluded a scene-band). A band with another set (its key differs,
        ``outliers.decision_key``) decides its own squares while it composites."""
        sets: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        count: dict[tuple[str, ...], int] = {}
        for band in OUTPUT_BANDS:
            scenes = self.scenes_for(band)
            ids = tuple(s["id"] for s in scenes)
            sets[ids] = scenes
            count[ids] = count.get(ids, 0) + 1
        return sets[max(count, key=lambda ids: (count[ids], len(ids), ids))]

    def window_count(self) -> int:
        return sum(len(p.windows) for p in self.plan.values())

    # --- scenes per band ---------------------------------------------------------------------
    def scenes_for(self, band: str, extra: list[Exclusion] | tuple[Exclusion, ...] = ()
                   ) -> list[dict[str, Any]]:
        """The scenes a band is composited from: every scene minus its excluded scene-bands
        (recorded at select, plus ``extra`` runtime records), in manifest order."""
        out = {e.scene for e in (*self.excluded, *extra) if e.band == band}
        return [s for s in self.scenes if s["id"] not in out]

    def exclusions_for(self, band: str) -> list[Exclusion]:
        return [e for e in self.excluded if e.band == band]

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "tile": self.tile, "year": self.year,
                "collection": self.collection, "api_url": self.api_url,
                "options": self.options, "mask_classes": list(self.mask_classes),
                "median_memory_mb": self.median_memory_mb, "scenes": self.scenes,
                "dropped": self.dropped, "excluded": [e.to_dict() for e in self.excluded],
                "excluded_scenes": self.excluded_scenes,
                "plan": {b: p.to_dict() for b, p in self.plan.items()}}

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse and check a manifest; InputError on a wrong version or shape."""
        if not isinstance(data, dict):
            raise InputError(f"a manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != MANIFEST_VERSION:
            raise InputError(f"manifest version {version!r} is not {MANIFEST_VERSION} "
                             "(written by another cloudfree release? rerun with force)")
        missing = [k for k in ("tile", "year", "scenes", "plan", "mask_classes",
                               "median_memory_mb") if k not in data]
        if missing:
            raise InputError(f"manifest lacks {missing}")
        if not isinstance(data["scenes"], list) or not isinstance(data["plan"], dict):
            raise InputError("manifest 'scenes' must be a list and 'plan' an object")
        try:
            return cls(tile=str(data["tile"]), year=int(data["year"]),
                       scenes=[_check_scene(s) for s in data["scenes"]],
                       plan={str(b): BandPlan.from_dict(p) for b, p in data["plan"].items()},
                       mask_classes=tuple(int(c) for c in data["mask_classes"]),
                       median_memory_mb=int(data["median_memory_mb"]),
                       collection=str(data.get("collection") or "sentinel-2-l2a"),
                       api_url=data.get("api_url"), options=dict(data.get("options") or {}),
                       dropped=list(data.get("dropped") or []),
                       excluded=[Exclusion.from_dict(e) for e in data.get("excluded") or []],
                       excluded_scenes=list(data.get("excluded_scenes") or []))
        except (TypeError, ValueError) as err:
            raise InputError(f"malformed manifest: {err}") from err

    def write(self, uri: str) -> None:
        storage.write_json(uri, self.to_dict())

    @classmethod
    def read(cls, uri: str) -> Manifest:
        """Read ``uri``; a corrupt, old or malformed manifest is an InputError naming it."""
        try:
            return cls.from_dict(storage.read_json(uri))
        except (InputError, CorruptObjectError) as err:
            raise InputError(f"{uri}: {err}") from err


# --- runtime exclusion records (mid-median failures) ------------------------------------------
def record_exclusion(layout: Any, year: int, tile: str, exclusion: Exclusion) -> str:
    """Write the exclusion record of one (band, scene) under the tile's work prefix (idempotent:
    the first reason stays)."""
    uri = layout.exclusion(year, tile, exclusion.band, exclusion.scene)
    if not storage.exists(uri):
        storage.write_json(uri, exclusion.to_dict())
    return uri


def band_exclusions(layout: Any, year: int, tile: str, band: str) -> list[Exclusion]:
    """The runtime exclusion records of one band, sorted (deterministic)."""
    prefix = layout.exclusions_prefix(year, tile, band)
    return sorted(Exclusion.from_dict(storage.read_json(u)) for u in storage.list_uris(prefix)
                  if u.endswith(".json"))


def all_exclusions(manifest: Manifest, layout: Any) -> list[Exclusion]:
    """Every excluded scene-band of a tile: the select-time ones and the runtime records."""
    runtime = [e for b in manifest.plan for e in band_exclusions(layout, manifest.year,
                                                                 manifest.tile, b)]
    return sorted(set(manifest.excluded) | set(runtime))


def clear_exclusions(layout: Any, year: int, tile: str, bands: Any = OUTPUT_BANDS) -> int:
    """Delete a tile's runtime exclusion records (a new manifest starts without them)."""
    n = 0
    for band in bands:
        for uri in list(storage.list_uris(layout.exclusions_prefix(year, tile, band))):
            storage.remove(uri)
            n += 1
    return n
