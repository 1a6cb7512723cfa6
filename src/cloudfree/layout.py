"""The one owner of every S3 key cloudfree reads or writes (deterministic, rerun-safe).

Buckets (names come from the stack outputs / settings):
- work bucket  (intermediates, lifecycle-expired): manifests, window results, markers
- data bucket  (public, read-only under ``DATA_PREFIX``): COGs + STAC JSON
- control bucket: reprocessing ``requests/``, run ``reports/``, plan lists
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_PREFIX = "sentinel-2-annual-median"
COLLECTION_ID = "sentinel-2-annual-median"
#: Folder of the per-tile markers inside ``work/{year}/`` (not a tile id: those are 5 chars).
MARKERS = "_markers"
MARKER_KINDS = ("DONE", "EMPTY", "FAILED")

#: Key prefixes and marker names. The template's S3 event filters and lifecycle rule use the
#: same strings (tests/unit/test_template.py derives them from here and asserts they agree).
WORK_PREFIX = "work/"
DONE_MARKER = "DONE.json"
EMPTY_MARKER = "EMPTY.json"
FAILED_MARKER = "FAILED.json"
REQUESTS_PREFIX = "requests/"
PENDING_REQUESTS_PREFIX = "pending-requests/"
REJECTED_PREFIX = "rejected/"
REPORTS_PREFIX = "reports/"
PLANS_PREFIX = "plans/"
RESULTS_PREFIX = "results/"
INDEX_PREFIX = "index/"
GEOPARQUET = "items.parquet"


def _tile_year(tile: str, year: int) -> str:
    return f"{int(year)}/{tile}"


@dataclass(frozen=True)
class Layout:
    """S3 URIs for one deployment (bucket names), or paths under a local ``root``."""

    work_bucket: str
    data_bucket: str
    control_bucket: str
    data_prefix: str = DATA_PREFIX
    #: A local folder standing in for S3 (``cloudfree composite``): bucket ``b`` is ``root/b``.
    root: str | None = None

    def _bucket(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if self.root else f"s3://{name}"

    # --- work bucket -------------------------------------------------------------------------
    def run_prefix(self, year: int, tile: str) -> str:
        return f"{self._bucket(self.work_bucket)}/{WORK_PREFIX}{_tile_year(tile, year)}"

    def outlier_decisions(self, year: int, tile: str) -> str:
        """Folder of the outlier decisions shared by a tile's bands (``outliers``: one file per
        ``outliers.CACHE_CHUNK`` px square of the 20 m grid, under a key of what the decision
        depends on)."""
        return f"{self.run_prefix(year, tile)}/outliers"

    def manifest(self, year: int, tile: str) -> str:
        """Scene manifest written by *select* (the selected scenes and their decisions)."""
        return f"{self.run_prefix(year, tile)}/manifest.json"

    def window_result(self, year: int, tile: str, band: str, row: int, col: int) -> str:
        """One window's median (GeoTIFF, UTM grid) written by *median*."""
        return f"{self.run_prefix(year, tile)}/windows/{band}/r{row:05d}_c{col:05d}.tif"

    def window_stats(self, year: int, tile: str, band: str, row: int, col: int) -> str:
        return f"{self.run_prefix(year, tile)}/windows/{band}/r{row:05d}_c{col:05d}.json"

    def windows_prefix(self, year: int, tile: str, band: str) -> str:
        return f"{self.run_prefix(year, tile)}/windows/{band}/"

    def exclusions_prefix(self, year: int, tile: str, band: str) -> str:
        """Runtime exclusion records of one band (scenes a median could not read)."""
        return f"{self.run_prefix(year, tile)}/excluded/{band}/"

    def exclusion(self, year: int, tile: str, band: str, scene: str) -> str:
        """The exclusion record of one (band, scene), written by *median* after bounded retries."""
        return f"{self.exclusions_prefix(year, tile, band)}{scene}.json"

    def decide_stats_prefix(self, year: int, tile: str) -> str:
        return f"{self.run_prefix(year, tile)}/decide"

    def decide_stats(self, year: int, tile: str, batch: int) -> str:
        """What one *decide* invocation did (squares computed, seconds): the tile's cost."""
        return f"{self.decide_stats_prefix(year, tile)}/{int(batch):03d}.json"

    def band_stats(self, year: int, tile: str, band: str) -> str:
        """Per-band statistics written by *assemble* beside the COG (count, contributions)."""
        return f"{self.run_prefix(year, tile)}/bands/{band}.json"

    def staged_cog(self, year: int, tile: str, band: str) -> str:
        """A band's COG as *assemble* wrote it (staging, never public; *publish* copies it)."""
        return f"{self.run_prefix(year, tile)}/cogs/{tile}_{int(year)}_{band}.tif"

    # --- tile markers: one small object per tile and kind, under one prefix per year, so the
    # report lists a year's status in ~N/1000 calls instead of reading 2-4 objects per tile
    def markers_prefix(self, year: int) -> str:
        return f"{self._bucket(self.work_bucket)}/{WORK_PREFIX}{int(year)}/{MARKERS}/"

    def tile_marker(self, year: int, tile: str, kind: str) -> str:
        """``work/{year}/_markers/{tile}/{DONE|EMPTY|FAILED}.json``."""
        if kind not in MARKER_KINDS:
            raise ValueError(f"marker kind must be one of {MARKER_KINDS}, got {kind!r}")
        return f"{self.markers_prefix(year)}{tile}/{kind}.json"  # DONE_MARKER etc.

    def tile_done(self, year: int, tile: str) -> str:
        """Written by *complete* on every execution that (re)computed the tile; its S3 event
        (prefix ``work/``, suffix ``DONE.json``) triggers *publish*."""
        return self.tile_marker(year, tile, "DONE")

    def tile_empty(self, year: int, tile: str) -> str:
        """Written by *select* when a tile has no usable scene (the reason inside)."""
        return self.tile_marker(year, tile, "EMPTY")

    def tile_failed(self, year: int, tile: str) -> str:
        """Written by *record failure* (the error and its cause)."""
        return self.tile_marker(year, tile, "FAILED")

    @staticmethod
    def parse_tile_done(key: str) -> tuple[int, str] | None:
        """``work/{year}/_markers/{tile}/DONE.json`` -> (year, tile id as written); None for
        other keys."""
        parts = key.strip("/").split("/")
        if (len(parts) != 5 or f"{parts[0]}/" != WORK_PREFIX or parts[2] != MARKERS
                or parts[4] != DONE_MARKER or not parts[1].isdigit()):
            return None
        return int(parts[1]), parts[3]

    # --- data bucket (public) ----------------------------------------------------------------
    def output_prefix(self, year: int, tile: str) -> str:
        return f"{self._bucket(self.data_bucket)}/{self.data_prefix}/{_tile_year(tile, year)}"

    def version_prefix(self, year: int, tile: str, version: str) -> str:
        """One published version of a tile's COGs (a content hash: assets never change in
        place, so an item never points at files from two runs or half-replaced files)."""
        return f"{self.output_prefix(year, tile)}/{version}/"

    def band_cog(self, year: int, tile: str, band: str, version: str) -> str:
        """``…/{year}/{tile}/{version}/{tile}_{year}_{band}.tif`` (band may be ``visual`` or
        ``count``); written only by *publish*, copied from :meth:`staged_cog`."""
        return f"{self.version_prefix(year, tile, version)}{tile}_{int(year)}_{band}.tif"

    def item(self, year: int, tile: str) -> str:
        return f"{self.output_prefix(year, tile)}/{tile}_{int(year)}.json"

    def collection(self) -> str:
        return f"{self._bucket(self.data_bucket)}/{self.data_prefix}/collection.json"

    def geoparquet(self) -> str:
        """The stac-geoparquet file of the whole collection (``cloudfree catalog load``)."""
        return f"{self._bucket(self.data_bucket)}/{self.data_prefix}/{GEOPARQUET}"

    def index_prefix(self, year: int | None = None) -> str:
        base = f"{self._bucket(self.data_bucket)}/{self.data_prefix}/{INDEX_PREFIX}"
        return base if year is None else f"{base}{int(year)}/"

    def index_part(self, year: int, tile: str) -> str:
        """One index record per item, written by its own publish only (conditional put); its
        LastModified tells the report whether the item is older than the tile's marker."""
        return f"{self.index_prefix(year)}{tile}.json"

    # --- control bucket ----------------------------------------------------------------------
    def request(self, name: str) -> str:
        """A reprocessing request; its S3 event triggers *reprocess*."""
        return f"{self._bucket(self.control_bucket)}/{REQUESTS_PREFIX}{name}"

    def pending_request(self, execution: str) -> str:
        """The failed tiles of an execution, as a request waiting for an operator to submit."""
        return f"{self._bucket(self.control_bucket)}/{PENDING_REQUESTS_PREFIX}{execution}.json"

    def rejected(self, name: str) -> str:
        """Why the request ``requests/{name}`` was rejected."""
        return f"{self._bucket(self.control_bucket)}/{REJECTED_PREFIX}{name}.json"

    def report(self, execution: str) -> str:
        return f"{self._bucket(self.control_bucket)}/{REPORTS_PREFIX}{execution}.json"

    def plan_list(self, execution: str) -> str:
        return f"{self._bucket(self.control_bucket)}/{PLANS_PREFIX}{execution}/tiles.json"

    def results_prefix(self) -> str:
        """Where the Distributed Map's ResultWriter writes (statemachine ``Prefix``)."""
        return f"{self._bucket(self.control_bucket)}/{RESULTS_PREFIX}"
