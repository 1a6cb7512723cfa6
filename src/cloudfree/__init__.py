"""cloudfree: annual cloud-free Sentinel-2 L2A composites, published as COGs described by STAC."""

__version__ = "0.1.0"
