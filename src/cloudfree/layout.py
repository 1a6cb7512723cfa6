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


def _tile_year(tile: str, year: int) -> str:
    return f"{int(year)}/{tile}"


@dataclass(frozen=True)
class Layout:
    """S3 URIs for one deployment (bucket names)."""

    work_bucket: str
    data_bucket: str
    control_bucket: str
    data_prefix: str = DATA_PREFIX

    # --- work bucket -------------------------------------------------------------------------
    def run_prefix(self, year: int, tile: str) -> str:
        return f"s3://{self.work_bucket}/work/{_tile_year(tile, year)}"

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

    def band_stats(self, year: int, tile: str, band: str) -> str:
        """Per-band statistics written by *assemble* beside the COG (count, contributions)."""
        return f"{self.run_prefix(year, tile)}/bands/{band}.json"

    def tile_done(self, year: int, tile: str) -> str:
        return f"{self.run_prefix(year, tile)}/DONE.json"

    # --- data bucket (public) ----------------------------------------------------------------
    def output_prefix(self, year: int, tile: str) -> str:
        return f"s3://{self.data_bucket}/{self.data_prefix}/{_tile_year(tile, year)}"

    def band_cog(self, year: int, tile: str, band: str) -> str:
        """``…/{year}/{tile}/{tile}_{year}_{band}.tif`` (band may be ``visual`` or ``count``)."""
        return f"{self.output_prefix(year, tile)}/{tile}_{int(year)}_{band}.tif"

    def item(self, year: int, tile: str) -> str:
        return f"{self.output_prefix(year, tile)}/{tile}_{int(year)}.json"

    def collection(self) -> str:
        return f"s3://{self.data_bucket}/{self.data_prefix}/collection.json"

    def index_part(self, year: int, tile: str) -> str:
        """One immutable index record per item (the searchable index; no shared file to race)."""
        return f"s3://{self.data_bucket}/{self.data_prefix}/index/{int(year)}/{tile}.json"

    # --- control bucket ----------------------------------------------------------------------
    def request(self, name: str) -> str:
        return f"s3://{self.control_bucket}/requests/{name}"

    def report(self, execution: str) -> str:
        return f"s3://{self.control_bucket}/reports/{execution}.json"

    def plan_list(self, execution: str) -> str:
        return f"s3://{self.control_bucket}/plans/{execution}/tiles.json"
