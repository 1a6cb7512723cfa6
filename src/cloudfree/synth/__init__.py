"""A synthetic Sentinel-2 L2A archive shaped like Earth Search v1, with a known cloud-free truth.

``generate_archive(tiles, year, scenes, aoi=None, bucket="sentinel-cogs", out=None, seed=0,
api_url=None)`` writes scenes (COGs + items) and the truth; ``cloudfree synth`` is its CLI.
"""

from __future__ import annotations

from .archive import ArchiveSummary, generate_archive

__all__ = ["ArchiveSummary", "generate_archive"]
