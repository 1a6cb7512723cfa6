"""One band window end to end: read every scene + SCL, mask, harmonize, median, write.

``composite_window`` is pure computation on pixels (reads only); ``write_window_result`` writes
the window GeoTIFF (band 1 median, band 2 count for reflectance; 3 bands for visual) and its
statistics JSON; ``composite_band_windows`` runs a batch of windows rerun-safely.

Per window and band, in this order:

1. **States** (:func:`build_states`): each scene's SCL is read with a margin of
   ``dilate_nodata`` band pixels (clipped at the tile edge), turned into per-pixel states
   (``mask.scene_state``: no data / masked / snow / clear; 60 m pixels judged on all nine 20 m
   SCL pixels), nodata-dilated, then cropped to the window: the result does not depend on the
   window layout. A band DN of 0 (nodata) demotes a pixel to masked.
2. **Harmonization**: each scene's BOA offset is subtracted from its usable pixels.
3. **Fusion** (:func:`fuse_observations`): scenes that share ``"observation"`` in the manifest
   (granules of one acquisition split by a datastrip boundary, see ``select``) become ONE layer
   before the median: per pixel the first granule, in (datetime, id) order, with the best state
   (clear > snow > masked > no data). This is odc-stac's ``groupby="solar_day"`` fusing
   (items of a group sorted by time and id, ``odc/stac/_stac_load.py::_group_items``; the
   default fuser copies a source pixel only where the result is still nodata,
   ``odc/loader/_fuser.py::nodata_fuser``), except that the validity here is the SCL mask, not
   only the nodata value, so a pixel one granule masks can come from the other.
4. **Snow fallback** (:func:`snow_fallback`): a pixel with at least one snow-free clear
   observation uses only those; a pixel without any uses its snow observations (glaciers,
   permanent snow: no holes over ice). Such pixels are flagged: bit ``mask.COUNT_SNOW_FLAG``
   (128) of the count band in the window GeoTIFF (and so of the published ``count`` COG), and
   ``snow_pixels`` in the window statistics.
5. **Outliers** (``outliers.band_window_rejection``, default on): observations SCL let through
   that are far brighter in the blue (missed cloud, haze) or darker in the NIR (missed shadow)
   than the pixel's robust centre are dropped; the decision is made on the 20 m grid from the
   reference bands, so it is the same for every band. Counted per scene (``outliers`` in the
   window statistics, beside ``masked``: the scene's observed pixels SCL masked).
6. **Median** of the used observations (``median.masked_median``); the count band counts them.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import mask, storage
from .bands import Band, get_band
from .errors import (
    IncompleteError,
    InputError,
    NoScenesError,
    SourceReadError,
    UnreadableSourceError,
)
from .manifest import Exclusion, Manifest, band_exclusions, record_exclusion
from .windows import (
    DEFAULT_THREADS,
    SclArea,
    Window,
    read_scl_patch,
    read_stack,
    run_reads,
    scl_patch_from,
)

#: Pixels of SCL class 0 (no data) grown by this many band pixels before masking.
DEFAULT_DILATE_NODATA = 2
#: Internal tile size of the window GeoTIFFs.
RESULT_BLOCK = 512


@dataclass
class WindowResult:
    """The composite of one band window."""

    band: str
    window: Window
    median: np.ndarray  # (h, w) uint16, or (3, h, w) uint8 for visual
    count: np.ndarray  # (h, w) uint8: valid observations per pixel
    contributions: dict[str, int]  # scene id -> valid pixels it contributed
    offsets: dict[str, int] = field(default_factory=dict)  # scene id -> offset subtracted
    observed: int | None = None  # pixels some scene has data for (SCL != 0): the footprint
    snow: np.ndarray | None = None  # (h, w) bool: the median came from snow observations only
    outliers: dict[str, int] = field(default_factory=dict)  # scene id -> observations rejected
    masked: dict[str, int] = field(default_factory=dict)  # scene id -> pixels SCL masked
    #: (row0, col0, row1, col1), ends excluded, on the band's tile grid: the bounding box of the
    #: observed pixels (``observed``), None when none is; assemble crops the COG to the tile's
    #: observed part (``assemble.data_crop``)
    observed_bbox: tuple[int, int, int, int] | None = None

    @property
    def snow_pixels(self) -> int:
        """Pixels whose value is the median of snow observations (no snow-free one existed)."""
        return 0 if self.snow is None else int(np.count_nonzero(self.snow))

    @property
    def valid_pixels(self) -> int:
        """Pixels with at least one valid observation."""
        return int(np.count_nonzero(self.count))

    def _observed_count(self) -> np.ndarray:
        """``count`` over the observed box (zero everywhere else: an observation needs an
        observed pixel), or all of it when the footprint is unknown."""
        if self.observed is None:
            return self.count
        if self.observed_bbox is None:
            return self.count[:0, :0]
        r0, c0, r1, c1 = self.observed_bbox
        return self.count[r0 - self.window.row_off:r1 - self.window.row_off,
                          c0 - self.window.col_off:c1 - self.window.col_off]

    def stats(self) -> dict[str, Any]:
        """Small JSON-able statistics (the window stats object)."""
        count = self._observed_count()
        n = max(len(self.contributions), int(count.max(initial=0)))
        hist = np.bincount(count.ravel(), minlength=n + 1)
        hist[0] += self.window.size - count.size  # the unobserved rest: no observation
        return {
            "band": self.band,
            "window": self.window.to_dict(),
            "key": self.window.key,
            "pixels": self.window.size,
            "valid_pixels": self.valid_pixels,
            "snow_pixels": self.snow_pixels,
            "observed_pixels": self.window.size if self.observed is None else self.observed,
            "count_histogram": [int(v) for v in hist],
            "contributions": {k: int(v) for k, v in self.contributions.items()},
            "offsets": {k: int(v) for k, v in self.offsets.items()},
            "outliers": {k: int(v) for k, v in self.outliers.items()},
            "masked": {k: int(v) for k, v in self.masked.items()},
            # observed unknown (None): the whole window, as observed_pixels
            "observed_bbox": [self.window.row_off, self.window.col_off,
                              self.window.row_off + self.window.height,
                              self.window.col_off + self.window.width]
            if self.observed is None else
            None if self.observed_bbox is None else [int(v) for v in self.observed_bbox],
        }


def _scene_hrefs(scenes: Sequence[dict], asset: str) -> list[str]:
    hrefs = []
    for scene in scenes:
        try:
            hrefs.append(scene["assets"][asset])
        except KeyError as err:
            raise InputError(f"scene {scene.get('id')!r} has no {asset!r} asset") from err
    return hrefs


_scratch = threading.local()


@contextlib.contextmanager
def reused_buffers():
    """Within this block, :func:`scratch` arrays are kept for this thread and reused by the next
    window of the same shape (a median batch's windows); they are freed when it ends.

    A window's stack and states are hundreds of MB (16 scenes x 3072² px: 302 + 151 MB), far
    above glibc's largest mmap threshold (32 MB), so each new one is mapped afresh and every
    page of it faults on first touch: ~1.8 ms per MB on this VM (7 us per 4 KB page), about a
    second per 10 m window.
    """
    _scratch.arrays = {}
    try:
        yield
    finally:
        del _scratch.arrays


def scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array: inside :func:`reused_buffers`, made from the memory
    of the last call with this ``name`` and dtype (in this thread's :func:`scratch_slot`) when
    that held enough (a batch's narrower edge window, or a window's usable box, reuses its big
    buffer instead of mapping a new one and faulting its pages in, then dropping it for the
    next full window); for arrays that do not outlive the call taking them."""
    arrays = getattr(_scratch, "arrays", None)
    if arrays is None:
        return np.empty(shape, dtype)
    need, dtype = math.prod(shape), np.dtype(dtype)
    key = (getattr(_scratch, "slot", 0), name)
    flat = arrays.get(key)
    if flat is None or flat.dtype != dtype or flat.size < need:
        arrays.pop(key, None)  # the old one goes before the new one is made
        flat = arrays[key] = np.empty(need, dtype)
    return flat[:need].reshape(shape)


@contextlib.contextmanager
def scratch_slot(slot: int):
    """Within this block, this thread's :func:`scratch` arrays are slot ``slot``'s: a reader
    filling one window's arrays while the previous window's are still in use alternates two
    slots (:class:`_ReadAhead`)."""
    before = getattr(_scratch, "slot", 0)
    _scratch.slot = slot
    try:
        yield
    finally:
        _scratch.slot = before


def _offsets(scenes: Sequence[dict]) -> np.ndarray:
    values = [int((s.get("harmonization") or {}).get("offset", 0) or 0) for s in scenes]
    return np.asarray(values, dtype=np.int64)


def build_states(scl_hrefs: Sequence[str], band: Band, window: Window,
                 mask_classes: Iterable[int] | None, dilate_nodata: int, *,
                 threads: int = DEFAULT_THREADS,
                 scl_areas: Sequence[SclArea] | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Per-scene observation states (S, h, w) uint8 (``mask.NODATA`` .. ``mask.CLEAR``).

    Each SCL is read with a margin of ``dilate_nodata`` band pixels, so the nodata dilation sees
    the same neighbours whatever the window layout, then cropped to the window. ``scl_areas``
    (one per scene, ``windows.read_scl_area``): SCL already read over a larger area; a patch
    inside it is cut from it (the same pixels) instead of read.
    """
    classes = tuple(mask.DEFAULT_MASK_CLASSES if mask_classes is None else mask_classes)
    shape = (len(scl_hrefs), window.height, window.width)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise InputError(f"states into {out.shape} {out.dtype}: expected {shape} uint8")

    def _one(i: int) -> None:
        patch = None if scl_areas is None else scl_patch_from(scl_areas[i], band, window,
                                                                dilate_nodata)
        if patch is None:
            patch = read_scl_patch(scl_hrefs[i], band, window, margin=dilate_nodata)
        state = mask.scene_state(patch.scl20, band.resolution, classes, dilate_nodata)
        crop = state[patch.row: patch.row + window.height, patch.col: patch.col + window.width]
        if crop.shape != window.shape:
            raise SourceReadError(f"SCL {scl_hrefs[i]} does not cover window {window.key} of "
                                  f"{band.key} (got {crop.shape} px on the band grid)")
        out[i] = crop

    run_reads(_one, range(len(scl_hrefs)), threads)
    return out


def observation_groups(scenes: Sequence[dict]) -> list[list[int]]:
    """Indices of the scenes that share an ``"observation"`` id (only groups of 2 or more),
    each in (datetime, id) order - the fusing order (odc-stac sorts a group by time, id)."""
    groups: dict[str, list[int]] = {}
    for i, scene in enumerate(scenes):
        if scene.get("observation"):
            groups.setdefault(str(scene["observation"]), []).append(i)
    order = [sorted(g, key=lambda i: (str(scenes[i].get("datetime") or ""),
                                      str(scenes[i].get("id") or ""), i))
             for _, g in sorted(groups.items())]
    return [g for g in order if len(g) > 1]


def fuse_observations(stack: np.ndarray, states: np.ndarray,
                      groups: Sequence[Sequence[int]]) -> dict[int, np.ndarray]:
    """Fuse each group of scenes into its first member's layer, in place.

    ``stack`` (S, h, w) or (S, c, h, w); ``states`` (S, h, w). Per pixel the group's layer takes
    the first member (group order) with the highest state (clear > snow > masked > nodata); the
    other members' states become ``NODATA`` so they no longer count. Returns, per group leader,
    the (h, w) int16 map of which scene index each pixel came from (for contributions).
    """
    sources: dict[int, np.ndarray] = {}
    for group in groups:
        lead, rest = group[0], group[1:]
        src = np.full(states.shape[1:], lead, dtype=np.int16)
        for m in rest:
            better = states[m] > states[lead]
            if better.any():
                if stack.ndim == 4:
                    np.copyto(stack[lead], stack[m], where=better[None])
                else:
                    np.copyto(stack[lead], stack[m], where=better)
                np.copyto(states[lead], states[m], where=better)
                src[better] = m
            states[m] = mask.NODATA
        sources[lead] = src
    return sources


def _states_kernel(*arrays: np.ndarray):
    """``cloudfree._median`` (its state passes) when it is built and every array is
    C-contiguous, else None (the numpy path). :data:`STATES_KERNEL` False turns it off."""
    from .median import _compiled

    if not STATES_KERNEL or _compiled is None:
        return None
    return _compiled if all(a.flags.c_contiguous for a in arrays) else None


#: Use the compiled passes over the states (:func:`snow_fallback`, :func:`_demote_missing`)
#: where they are built; the tests compare them with the numpy path (False).
STATES_KERNEL = True


def snow_fallback(states: np.ndarray, *, in_place: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(use (S, h, w) uint8, snow (h, w) bool) from the states (S, h, w).

    A pixel with a snow-free clear observation uses exactly those; a pixel without one uses its
    snow observations and is flagged in ``snow``. Scene by scene: the temporaries are one
    scene's. ``in_place``: ``use`` is written over ``states`` (returned as ``use``; the caller
    no longer needs the states): no new (S, h, w) array, whose first-touch page faults cost
    more than the comparison (~0.3 s for a 3072 px window of 16 scenes on this VM).

    Compiled (``cloudfree._median.snow_fallback``): one pass over the states in blocks of
    4096 pixels instead of four numpy passes per scene: 0.040 -> 0.0095 s for 16 x 2048² px.
    """
    kernel = _states_kernel(states)
    if kernel is not None and states.ndim == 3 and states.dtype == np.uint8:
        use = states if in_place else states.copy()  # the kernel writes over its input
        snow = np.empty(use.shape[1:], np.uint8)
        kernel.snow_fallback(use, snow, use.shape[0])
        return use, snow.view(bool)
    return _snow_fallback_numpy(states, states if in_place else np.empty(states.shape, np.uint8))


def _snow_fallback_numpy(states: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`snow_fallback` in numpy, into ``use`` (``states`` itself, or a new array)."""
    ground = np.zeros(states.shape[1:], bool)
    snowy = np.zeros(states.shape[1:], bool)
    for s in range(states.shape[0]):
        ground |= states[s] == mask.CLEAR
        snowy |= states[s] == mask.SNOW
    snow = ~ground & snowy
    fallback = snow.any()
    for s in range(states.shape[0]):
        clear = states[s] == mask.CLEAR
        if fallback:
            clear |= (states[s] == mask.SNOW) & snow
        use[s] = clear
    return use, snow


def _contributions(res_contrib: np.ndarray, use: np.ndarray,
                   sources: dict[int, np.ndarray]) -> np.ndarray:
    """Valid pixels per scene, a fused layer's pixels credited to the granule they came from."""
    out = np.asarray(res_contrib, dtype=np.int64).copy()
    for lead, src in sources.items():
        used = use[lead].astype(bool)
        for m in np.unique(src):
            out[int(m)] = int(np.count_nonzero(used & (src == m)))
    return out


def _reflectance_median(stack: np.ndarray, use: np.ndarray):
    from .median import masked_median

    return masked_median(stack, use)


def _visual_median(stack: np.ndarray, use: np.ndarray):
    """Per-channel exact median of a (S, 3, h, w) uint8 stack -> (median (3,h,w) uint8, first)."""
    from .median import masked_median

    channels, first = [], None
    plane = scratch("visual_plane", (stack.shape[0], *stack.shape[2:]), np.uint16)
    for c in range(stack.shape[1]):  # one uint16 plane for the three channels (and windows)
        np.copyto(plane, stack[:, c])
        res = masked_median(plane, use)
        channels.append(res.median.astype(np.uint8))  # median of uint8 values fits uint8
        if first is None:
            first = res
    return np.stack(channels), first


def _stack_shape(n_scenes: int, band: Band, window: Window) -> tuple[int, ...]:
    """(S, h, w) for a reflectance band, (S, 3, h, w) for the visual image."""
    return (n_scenes, band.count, *window.shape) if band.count > 1 else (n_scenes, *window.shape)


def _window_states(scenes: Sequence[dict], band: Band, window: Window,
                   mask_classes: Iterable[int] | None, dilate_nodata: int,
                   threads: int) -> np.ndarray:
    """:func:`build_states` of the window into the "states" :func:`scratch` array."""
    return build_states(_scene_hrefs(scenes, "scl"), band, window, mask_classes, dilate_nodata,
                        threads=threads,
                        out=scratch("states", (len(scenes), *window.shape), np.uint8))


def _read_band(scenes: Sequence[dict], band: Band, window: Window, threads: int) -> np.ndarray:
    """The band's pixels of ``window`` from every scene, into the "stack" :func:`scratch`
    array (:func:`_stack_shape`)."""
    out = scratch("stack", _stack_shape(len(scenes), band, window), band.dtype)
    if band.count > 1:
        return read_stack(_scene_hrefs(scenes, band.key), window, threads=threads,
                          band_index=list(range(1, band.count + 1)), out=out)
    return read_stack(_scene_hrefs(scenes, band.key), window, threads=threads, out=out)


def _parse_window_args(manifest: dict, band_key: str, window: Window | dict
                       ) -> tuple[Band, Window, list[dict], tuple[str, ...]]:
    """(band, window, scenes, scene ids) of a window's composite; no scenes is an error."""
    scenes = manifest.get("scenes") or []
    if not scenes:
        raise NoScenesError(f"manifest for {manifest.get('tile')} {manifest.get('year')} "
                            "has no scenes")
    return (get_band(band_key), Window.from_dict(window), scenes,
            tuple(str(s.get("id", i)) for i, s in enumerate(scenes)))


def _given(ids: tuple[str, ...], band: Band, window: Window, states: np.ndarray | None,
           stack: np.ndarray | None, inputs: WindowInputs | None) -> np.ndarray | None:
    """The states :func:`composite_window` was given (``inputs``' or its own), once the arrays
    given are checked against the scenes and the window."""
    if inputs is not None:
        if inputs.ids != ids:
            raise InputError(f"inputs read for scenes {inputs.ids}, not {ids}")
        states = inputs.states
    if states is not None and states.shape != (len(ids), *window.shape):
        raise InputError(f"states of shape {states.shape} for {len(ids)} scenes and window "
                         f"{window.shape}")
    if stack is not None and (stack.dtype != np.dtype(band.dtype)
                              or stack.shape != _stack_shape(len(ids), band, window)):
        raise InputError(f"a stack of {stack.shape} {stack.dtype} for {band.key} window "
                         f"{window.shape} of {len(ids)} scenes (expected "
                         f"{_stack_shape(len(ids), band, window)} {band.dtype})")
    return states


@dataclass
class WindowInputs:
    """What :func:`composite_window` reads for one window, read ahead of it
    (:func:`read_window_inputs`): the scenes' states over the window; over the box of its
    usable pixels (``mask.usable_box``), the band's stack and the outlier decision (None when
    the rule is off, or when no pixel is usable: then nothing else is read either)."""

    ids: tuple[str, ...]  # the scenes they were read for
    states: np.ndarray
    stack: np.ndarray | None = None
    rejection: np.ndarray | None = None


def read_window_inputs(manifest: dict, band_key: str, window: Window | dict, *,
                       mask_classes: Iterable[int] | None = None,
                       dilate_nodata: int = DEFAULT_DILATE_NODATA,
                       threads: int = DEFAULT_THREADS, outliers: Any = None,
                       outlier_cache: str | None = None) -> WindowInputs:
    """Everything :func:`composite_window` reads for ``window`` (the same calls, the same
    arrays; options as there), so that it can be read while another window is composited."""
    from .outliers import band_window_rejection, parse_rule

    band, window, scenes, ids = _parse_window_args(manifest, band_key, window)
    states = _window_states(scenes, band, window, mask_classes, dilate_nodata, threads)
    box = mask.usable_box(states.max(axis=0))
    if box is None:
        return WindowInputs(ids, states)
    part = window.sub(box.bounds) if box.crops else window
    stack = _read_band(scenes, band, part, threads)
    rejection = band_window_rejection(scenes, band, part, rule=parse_rule(outliers),
                                      mask_classes=mask_classes, dilate_nodata=dilate_nodata,
                                      threads=threads, cache=outlier_cache)
    return WindowInputs(ids, states, stack, rejection)


def composite_window(manifest: dict, band_key: str, window: Window | dict, *,
                     mask_classes: Iterable[int] | None = None,
                     dilate_nodata: int = DEFAULT_DILATE_NODATA,
                     threads: int = DEFAULT_THREADS,
                     states: np.ndarray | None = None,
                     outliers: Any = None,
                     outlier_cache: str | None = None,
                     rejection: np.ndarray | None = None,
                     stack: np.ndarray | None = None,
                     inputs: WindowInputs | None = None) -> WindowResult:
    """Composite one window of one band from every scene of the manifest (module docstring).

    ``outliers``: ``outliers.OutlierRule``, ``"on"`` / ``"off"``, or None for the default
    rule (on). ``outlier_cache``: where the decision is shared between bands
    (``outliers.band_window_rejection``'s ``cache``; ``composite_band_windows`` puts it under
    the tile's work prefix).

    Valid = SCL not in ``mask_classes`` (class-0 edges dilated) AND the pixel is not nodata (0);
    snow observations stand in where a pixel has no other; granules of one observation are
    fused first. Reflectance bands get each scene's harmonization offset subtracted from its
    usable pixels; the visual image (3-band uint8) takes an exact per-channel median.

    ``states``: the scenes' states of this window on the band's grid, already built with
    :func:`build_states` for another band of the same resolution (one SCL read per window and
    resolution; modified in place, pass a copy to reuse it again).

    ``rejection``: the outlier decision on this window, (S, h, w) bool, already made for
    several bands at once (``outliers.band_window_rejection`` on a 20 m footprint covering
    them, carried with ``outliers.to_band_grid``: the same bits, the test is per pixel); used
    instead of making it here (``outliers`` is then ignored).

    ``stack``: the band's pixels of this window from every scene, (S, h, w) uint16 as
    ``windows.read_stack`` returns them, already read for another purpose (the outlier
    decision's reference bands, one read for both); used instead of reading them here, and
    modified in place (offsets subtracted, granules fused): pass a copy to use it again.
    For the visual image, (S, 3, h, w) uint8.

    ``inputs``: this window's states, and its usable box's stack and outlier decision, read
    ahead by :func:`read_window_inputs` (for the same scenes); used instead of all three.
    """
    band, window, scenes, ids = _parse_window_args(manifest, band_key, window)
    states = _given(ids, band, window, states, stack, inputs)
    if states is None:
        states = _window_states(scenes, band, window, mask_classes, dilate_nodata, threads)
    # each pixel's best state: > NODATA (0) observed, >= SNOW usable (one reduction, no
    # (S, h, w) temporary: big temporaries cost first-touch page faults, see read_stack)
    best = states.max(axis=0)
    observed, observed_bbox = int(np.count_nonzero(best)), footprint_bbox(best, window)
    box = mask.usable_box(best)
    del best
    if box is None:  # nothing usable anywhere: skip decoding the band
        return _empty_result(band, window, ids, scenes, observed, observed_bbox)
    if inputs is not None:  # read ahead over the usable box (read_window_inputs)
        stack, rejection = inputs.stack, inputs.rejection
    elif box.crops:
        stack = None if stack is None else stack[box.inside]
        rejection = None if rejection is None else rejection[box.inside]
    if box.crops:
        # Usable pixels only in part of the window (a swath edge, an observed patch): decode
        # and composite that box alone, then place it in the window (exact: the rest has no
        # usable observation, so count 0 and median 0 as in _empty_result; the outlier test is
        # per pixel). MASKED pixels outside the box still count in ``masked``.
        masked_outside = [int(np.count_nonzero(states[s] == mask.MASKED))
                          - int(np.count_nonzero(states[s][box.inside] == mask.MASKED))
                          for s in range(len(scenes))]
        part = composite_window(
            manifest, band_key, window.sub(box.bounds), mask_classes=mask_classes,
            dilate_nodata=dilate_nodata, threads=threads, states=box.cut(states),
            outliers=outliers, outlier_cache=outlier_cache, rejection=rejection, stack=stack)
        return _placed(part, window, box, observed, observed_bbox, masked_outside)
    if stack is None:
        stack = _read_band(scenes, band, window, threads)
    offsets = _offsets(scenes) if band.count == 1 else np.zeros(len(scenes), dtype=np.int64)
    masked = _demote_missing(stack, states, band)
    if np.any(offsets):
        from .harmonize import apply_offset

        for s in np.flatnonzero(offsets):  # scene by scene: no (S, h, w) mask
            apply_offset(stack[s:s + 1], offsets[s:s + 1], states[s:s + 1] >= mask.SNOW)
    sources = fuse_observations(stack, states, observation_groups(scenes))
    use, snow = snow_fallback(states, in_place=True)
    del states
    if rejection is not None and rejection.shape != (len(scenes), *window.shape):
        raise InputError(f"outlier decision of shape {rejection.shape} for {len(scenes)} "
                         f"scenes and window {window.shape}")
    removed = _reject_outliers(scenes, band, window, use, sources, outliers,
                               mask_classes=mask_classes, dilate_nodata=dilate_nodata,
                               threads=threads, cache=outlier_cache, rejection=rejection)
    if band.count > 1:
        median, res = _visual_median(stack, use)
    else:
        res = _reflectance_median(stack, use)
        median = res.median
    contrib = _contributions(res.contributions, use, sources)
    return WindowResult(band.key, window, median, res.count.astype(np.uint8),
                        dict(zip(ids, (int(v) for v in contrib), strict=True)),
                        dict(zip(ids, (int(v) for v in offsets), strict=True)), observed,
                        snow, dict(zip(ids, (int(v) for v in removed), strict=True)),
                        dict(zip(ids, (int(v) for v in masked), strict=True)), observed_bbox)


def _demote_missing(stack: np.ndarray, states: np.ndarray, band: Band) -> np.ndarray:
    """A band DN of 0 (all channels 0 for visual) demotes a usable observation (SNOW, CLEAR)
    to MASKED, in ``states``; returns each scene's MASKED + SNOW count. Scene by scene, so the
    temporaries are one scene's, not the stack's."""
    masked = np.zeros(states.shape[0], np.int64)
    kernel = _states_kernel(stack, states)
    if kernel is not None and states.dtype == np.uint8 and stack.dtype in (np.uint8, np.uint16):
        # one pass per scene instead of five: 0.10 -> 0.016 s for 16 x 2048² px
        kernel.demote_missing(stack, stack.dtype.itemsize, band.count, states, masked,
                              states.shape[0])
        return masked
    no_data = np.empty(states.shape[1:], bool)
    for s in range(states.shape[0]):
        if band.count > 1:
            np.logical_not(stack[s].any(axis=0), out=no_data)
        else:
            np.equal(stack[s], 0, out=no_data)
        st = states[s]
        np.minimum(st, mask.MASKED, out=st, where=no_data)
        masked[s] = np.count_nonzero(np.logical_xor(st == mask.MASKED, st == mask.SNOW))
    return masked


def _placed(part: WindowResult, window: Window, box: mask.UsableBox, observed: int,
            observed_bbox, masked_outside: Sequence[int]) -> WindowResult:
    """The result of the usable box of ``window`` (``part``) placed in the whole window: zeros
    (no observation) around it, the window's own footprint, ``masked`` plus what lies outside."""
    masked = {k: v + int(extra) for (k, v), extra in zip(part.masked.items(), masked_outside,
                                                          strict=True)}
    return replace(part, window=window, median=box.place(part.median),
                   count=box.place(part.count),
                   snow=None if part.snow is None else box.place(part.snow),
                   observed=observed, observed_bbox=observed_bbox, masked=masked)


def union_bbox(boxes) -> tuple[int, int, int, int] | None:
    """The bounding box of several ``(row0, col0, row1, col1)`` boxes (None ones ignored)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def footprint_bbox(footprint: np.ndarray, window: Window) -> tuple[int, int, int, int] | None:
    """The bounding box (row0, col0, row1, col1; ends excluded; on the tile grid) of the True
    pixels of ``footprint`` (the window's shape), None when there is none."""
    rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    if rows.size == 0:
        return None
    return (window.row_off + int(rows[0]), window.col_off + int(cols[0]),
            window.row_off + int(rows[-1]) + 1, window.col_off + int(cols[-1]) + 1)


def _reject_outliers(scenes: Sequence[dict], band: Band, window: Window, use: np.ndarray,
                     sources: dict[int, np.ndarray], rule: Any, *,
                     rejection: np.ndarray | None = None, **options: Any) -> np.ndarray:
    """Drop outlier observations from ``use`` in place; per-scene counts of those dropped.
    ``rejection``: the decision already made (not modified), else made here."""
    from .outliers import band_window_rejection

    if rejection is None:
        rejection = band_window_rejection(scenes, band, window, rule=rule, **options)
        if rejection is None:
            return np.zeros(len(scenes), np.int64)
    counts = np.zeros(len(scenes), np.int64)
    kept = {}  # the rejected observations of fused layers, for their granules' counts
    rejected = np.empty(use.shape[1:], bool)
    for s in range(len(scenes)):  # scene by scene: one scene's temporaries
        used = use[s].view(bool)  # 0/1 (snow_fallback)
        np.logical_and(rejection[s], used, out=rejected)
        counts[s] = np.count_nonzero(rejected)
        if counts[s]:
            np.logical_xor(used, rejected, out=used)  # used and not rejected
        if s in sources:
            kept[s] = rejected.copy()
    if not sources:
        return counts
    full = np.zeros(use.shape, np.uint8)
    for s, rejected in kept.items():
        full[s] = rejected
    return _contributions(counts, full, sources)


def _empty_result(band: Band, window: Window, ids: Sequence[str], scenes: Sequence[dict],
                  observed: int, observed_bbox: tuple[int, int, int, int] | None = None
                  ) -> WindowResult:
    """The result of a window without a single valid observation (all nodata)."""
    h, w = window.shape
    shape = (band.count, h, w) if band.count > 1 else (h, w)
    median = np.zeros(shape, dtype=np.uint8 if band.count > 1 else np.uint16)
    offsets = _offsets(scenes) if band.count == 1 else np.zeros(len(ids), dtype=np.int64)
    return WindowResult(band.key, window, median, np.zeros((h, w), dtype=np.uint8),
                        dict.fromkeys(ids, 0), dict(zip(ids, (int(v) for v in offsets),
                                                         strict=True)), observed,
                        outliers=dict.fromkeys(ids, 0), observed_bbox=observed_bbox)


# --- writing ---------------------------------------------------------------------------------
def result_array(result: WindowResult, band: Band) -> np.ndarray:
    """The bands of the window GeoTIFF: [median, count] uint16, or the 3 visual channels.

    The count band carries ``mask.COUNT_SNOW_FLAG`` (128) where the median came from snow
    observations only (counts stay below 128: at most ``median.MAX_SCENES`` scenes)."""
    return np.stack(result_planes(result, band))


def result_planes(result: WindowResult, band: Band) -> list[np.ndarray]:
    """:func:`result_array`'s bands, each its own array (written one by one: no stacked copy,
    whose fresh pages cost ~0.07 s per 4096 px window)."""
    if band.count > 1:
        return list(result.median)
    count = result.count.astype(np.uint16)
    if result.snow is not None:
        count[result.snow] |= mask.COUNT_SNOW_FLAG
    return [result.median, count]


#: Compression of the window GeoTIFFs: intermediates in the work bucket, read once by assemble
#: (the published COGs are DEFLATE, ``assemble.cog_profile``). ZSTD level 1 with the horizontal
#: predictor against the DEFLATE level 6 used before, on a 3072 px window of real 29RKH blue
#: (../shared/realdata/rio-tiler-pds/.../S2A_29RKH_20200219_0_L2A/B02.tif tiled) with its count
#: band, 2 threads, best of 3 at load ~4: write 0.30 s vs 7.58 s, read 0.13 s vs 0.42 s, 13.8 MB
#: vs 14.1 MB. Pixels are lossless either way; rasterio's wheels (the layer's too,
#: tests/unit/test_layer.py) carry libtiff with ZSTD.
WINDOW_COMPRESSION = {"compress": "ZSTD", "zstd_level": 1, "predictor": 2}


def result_profile(tile, band: Band, window: Window, count: int, dtype: str) -> dict[str, Any]:
    """GeoTIFF profile of a window result in the tile's UTM grid at the band's resolution."""
    block = RESULT_BLOCK if min(window.height, window.width) >= RESULT_BLOCK else 256
    profile = {
        "driver": "GTiff", "dtype": dtype, "count": count,
        "height": window.height, "width": window.width,
        "crs": tile.crs, "transform": window.transform(tile.transform(band.resolution)),
        "nodata": 0, **WINDOW_COMPRESSION,
        "interleave": "pixel" if band.count > 1 else "band",
        # compression on 2 threads (GTiff NUM_THREADS): blocks are still written in order, so
        # the bytes do not change (https://gdal.org/en/stable/drivers/raster/gtiff.html)
        "num_threads": 2,
    }
    if min(window.height, window.width) >= 256:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def write_window_result(result: WindowResult, uri: str, tile, band: Band | str,
                        stats_uri: str | None = None,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the window GeoTIFF to ``uri`` (temp file, then upload) and the stats JSON.

    ``stats_uri`` defaults to ``uri`` with ``.json`` instead of ``.tif`` (as ``Layout``).
    Returns the stats dict. The JSON is written last: its presence marks a finished window.
    """
    import rasterio

    from .grid import parse_tile

    tile = parse_tile(tile)
    band = get_band(band) if isinstance(band, str) else band
    planes = result_planes(result, band)
    profile = result_profile(tile, band, result.window, len(planes), str(planes[0].dtype))
    with tempfile.TemporaryDirectory(prefix="cloudfree-win-") as tmp:
        path = Path(tmp) / f"{result.window.key}.tif"
        with storage.gdal_env(GDAL_TIFF_INTERNAL_MASK="YES"), rasterio.open(path, "w",
                                                                         **profile) as dst:
            if band.count > 1:
                dst.write(result.median)  # pixel-interleaved: the 3 channels at once
            else:
                for i, plane in enumerate(planes, start=1):
                    dst.write(plane, i)
            if band.count == 1:
                dst.set_band_description(1, band.key)
                dst.set_band_description(2, "count")
        storage.upload_file(path, uri, "image/tiff")
    stats = {**result.stats(), **(extra or {})}
    storage.write_json(stats_uri or _stats_uri(uri), stats)
    return stats


def _stats_uri(uri: str) -> str:
    return uri[: -len(".tif")] + ".json" if uri.endswith(".tif") else uri + ".json"


def _band_scenes(manifest: Manifest | dict, band: str, runtime: list[Exclusion]) -> list[dict]:
    """The scenes a band is composited from: the manifest's minus every exclusion of the band."""
    if isinstance(manifest, Manifest):
        return manifest.scenes_for(band, runtime)
    out = {e.scene for e in runtime if e.band == band}
    return [s for s in manifest.get("scenes") or [] if s["id"] not in out]


def _failed_scenes(err: SourceReadError, scenes: Sequence[dict]) -> dict[str, str]:
    """Scene id -> reason for every scene one of whose assets is among ``err.failures``."""
    out = {}
    for scene in scenes:
        for key, href in (scene.get("assets") or {}).items():
            if href in err.failures:
                out[scene["id"]] = f"{key}: read failed: {err.failures[href][:300]}"
                break
    return out


def _window_done(uri: str, stats_uri: str, ids: list[str]) -> bool:
    """The window exists and was computed from exactly the scenes ``ids``."""
    stats = storage.read_json_if_exists(stats_uri)
    return stats is not None and stats.get("scenes") == ids and storage.exists(uri)


#: Share of the invocation's memory the window's estimate (``windows.window_memory_bytes``)
#: plus a second window's inputs may use for the next window to be read ahead. Measured peaks
#: stay below the estimate: blue, 3072 px, 16 scenes, 1,605 MB against 1,986 MB estimated with
#: reading ahead (992 against 1,410 without), at MedianMemoryMB 3008 (bench_fulltile.py).
READ_AHEAD_FRACTION = 0.75


def read_ahead_fits(band: Band | str, n_scenes: int, window: Window, memory_mb: int | None,
                    threads: int = DEFAULT_THREADS) -> bool:
    """Whether an invocation of ``memory_mb`` holds a window and the next one's inputs
    (states, stack, decision) at once (``READ_AHEAD_FRACTION``); False when unknown (None)."""
    from .windows import window_inputs_bytes, window_memory_bytes

    if not memory_mb:
        return False
    band = get_band(band) if isinstance(band, str) else band
    need = (window_memory_bytes(band, n_scenes, *window.shape, threads=threads)
            + window_inputs_bytes(band, n_scenes, *window.shape))
    return need <= memory_mb * 2**20 * READ_AHEAD_FRACTION


def _scratch_init() -> None:
    _scratch.arrays = {}


class _ReadAhead:
    """Reads the next window's inputs (:func:`read_window_inputs`) on a thread of its own while
    the caller composites the current window: GDAL decodes and numpy's large-array work
    release the GIL, so the reads use the core the masks and the median leave idle (a median
    batch ran at ~1.5 of 2 cores before). The reader's arrays come from two :func:`scratch`
    slots used in turn; a window's slot is reused for the window after next, which the caller
    starts reading only once it is done with this one. Freed with the thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cloudfree-read-ahead",
                                        initializer=_scratch_init)
        self._n = 0

    def start(self, read: Any, *args: Any, **kwargs: Any) -> Any:
        """``read(*args, **kwargs)`` in the next slot; its future."""
        slot, self._n = self._n % 2, self._n + 1

        def _in_slot() -> Any:
            with scratch_slot(slot):
                return read(*args, **kwargs)

        return self._pool.submit(_in_slot)

    def pipeline(self, read: Any, items: Sequence[Any]):
        """``(item, future of read(item))`` in order; each next item's read starts when its
        predecessor is handed out, i.e. once the caller is done with the one before (the slot
        it reuses)."""
        pending = self.start(read, items[0]) if items else None
        for k, item in enumerate(items):
            current = pending
            pending = self.start(read, items[k + 1]) if k + 1 < len(items) else None
            yield item, current

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def composite_band_windows(manifest: Manifest | dict, band: str,
                           windows: Iterable[Window | dict], layout, year: int, tile, *,
                           overwrite: bool = False, memory_mb: int | None = None,
                           after_window: Callable[[int], None] | None = None,
                           **options: Any) -> list[dict[str, Any]]:
    """Composite and write a batch of windows of one band; skip windows already written.

    The band's scenes are the manifest's minus its excluded scene-bands, including the
    exclusion records under the tile's work prefix. A window counts as done when its GeoTIFF
    and its stats JSON exist and the stats name exactly those scenes (rerun-safe after a
    timeout or retry; stale after a later exclusion). When reads of some scenes still fail
    after ``windows.read_window``'s retries while others succeed, those scenes are excluded for
    this band (a record each) and the window is computed again without them; when every scene
    fails, the error is raised (transient: nothing is recorded). ``options`` go to
    ``composite_window``. Returns one small summary dict per window (key, uri, skipped,
    valid_pixels, seconds, excluded) — safe for a Step Functions payload.

    ``memory_mb`` (the invocation's memory; default: the manifest's ``median_memory_mb``):
    when the window and the next one's inputs fit (:func:`read_ahead_fits`), each next window
    is read while the current one is composited (:class:`_ReadAhead`). The bytes written are
    the same either way. ``after_window(n)`` runs after the n-th window is written.
    """
    from .grid import parse_tile

    tile = parse_tile(tile)
    runtime = band_exclusions(layout, year, tile.id, band)
    base = manifest.to_dict() if isinstance(manifest, Manifest) else dict(manifest)
    if hasattr(layout, "outlier_decisions"):  # one outlier decision per place, for every band
        options.setdefault("outlier_cache", layout.outlier_decisions(year, tile.id))
    windows = [Window.from_dict(w) for w in windows]
    if memory_mb is None:
        memory_mb = base.get("median_memory_mb")
    n_scenes = len(base.get("scenes") or [])
    ahead = len(windows) > 1 and all(read_ahead_fits(band, n_scenes, w, memory_mb)
                                     for w in windows)
    out = []

    def _read(w: Window) -> WindowInputs | None:
        """The window's inputs for the band's scenes as they are when the read starts; None
        when it is done already (nothing read)."""
        scenes = _band_scenes(manifest, band, runtime)
        if not overwrite and _window_done(*_window_uris(layout, year, tile, band, w),
                                          [str(s["id"]) for s in scenes]):
            return None
        return read_window_inputs({**base, "scenes": scenes}, band, w, **options)

    with contextlib.ExitStack() as stack:
        stack.enter_context(reused_buffers())  # one stack and states array for the batch
        todo = (stack.enter_context(_ReadAhead()).pipeline(_read, windows) if ahead
                else ((w, None) for w in windows))
        for i, (w, current) in enumerate(todo):
            done, runtime = _composite_one(manifest, band, w, layout, year, tile, base,
                                           runtime, overwrite, options, current)
            out.append(done)
            if after_window is not None:
                after_window(i + 1)
    return out


def _window_uris(layout, year: int, tile, band: str, window: Window) -> tuple[str, str]:
    """(window GeoTIFF, window stats JSON) of a band window."""
    return (layout.window_result(year, tile.id, band, window.row_off, window.col_off),
            layout.window_stats(year, tile.id, band, window.row_off, window.col_off))


def _composite_one(manifest, band: str, window: Window, layout, year: int, tile, base: dict,
                   runtime: list, overwrite: bool, options: dict,
                   ahead: Any = None) -> tuple[dict, list]:
    """:func:`composite_band_windows` for one window: (its summary, the band's exclusions
    ``runtime`` as they are after it). ``ahead``: the future of its inputs being read ahead
    (:class:`_ReadAhead`), used when they were read for the scenes it is composited from."""
    uri, stats_uri = _window_uris(layout, year, tile, band, window)
    t0, newly = time.perf_counter(), []
    while True:
        scenes = _band_scenes(manifest, band, runtime)
        ids = [str(s["id"]) for s in scenes]
        if not overwrite and not newly and _window_done(uri, stats_uri, ids):
            return {"key": window.key, "uri": uri, "skipped": True}, runtime
        if not scenes:
            raise UnreadableSourceError(f"{tile.id} {year} {band}: no readable scene left "
                                        f"({len(runtime)} excluded during the median)")
        try:
            inputs = None
            if ahead is not None:  # once: a retry without failed scenes reads for itself
                future, ahead = ahead, None
                inputs = future.result()  # raises what the read raised
                if inputs is not None and inputs.ids != tuple(ids):
                    inputs = None  # read before an exclusion: for other scenes
            result = composite_window({**base, "scenes": scenes}, band, window, inputs=inputs,
                                      **options)
        except SourceReadError as err:
            bad = _failed_scenes(err, scenes)
            if not bad or len(bad) == len(scenes):
                raise  # not one scene's fault (an outage?): retried, nothing excluded
            for sid, reason in sorted(bad.items()):
                record_exclusion(layout, year, tile.id, Exclusion(band, sid, reason, "median"))
                newly.append(sid)
            runtime = band_exclusions(layout, year, tile.id, band)
            continue
        stats = write_window_result(result, uri, tile, band, stats_uri,
                                    {"seconds": round(time.perf_counter() - t0, 3),
                                     "scenes": ids})
        return {"key": window.key, "uri": uri, "skipped": False,
                "valid_pixels": stats["valid_pixels"], "pixels": stats["pixels"],
                "seconds": round(time.perf_counter() - t0, 3), "excluded": newly}, runtime


def reconcile_band(manifest: Manifest | dict, band: str, windows: Sequence[Window | dict],
                   layout, year: int, tile, **options: Any) -> int:
    """Make every window of a band use the band's final scene set; return windows recomputed.

    Median invocations run in parallel: one may exclude a scene after another finished a window
    with it. Before stitching, windows whose stats name another scene set (or that are
    missing) are computed again, until a pass changes nothing — so the band's bytes depend only
    on which scenes are readable, not on which window found a bad one first.
    """
    total = 0
    n = len(manifest.scenes if isinstance(manifest, Manifest) else manifest["scenes"])
    for _ in range(n + 1):  # every pass that recomputes with a new exclusion removes a scene
        redone = [d for d in composite_band_windows(manifest, band, windows, layout, year,
                                                    tile, **options) if not d["skipped"]]
        if not redone:
            return total
        total += len(redone)
    raise IncompleteError(f"{band}: window scene sets did not settle after {n + 1} passes")
