"""STAC items and the collection, shaped like Earth Search v1 ``sentinel-2-l2a``.

Layout copied from real items (``shared/realdata``): the ``_0``/``_1`` items of 2020 (baseline
02.14 / 05.00) and the 2025 items (``proj:centroid``, ``s2:tile_id``, ``view:azimuth``,
``view:incidence_angle``) - the synthetic items carry the union of both property sets.
Assets: the 12 reflectance bands, ``scl``, ``visual``, ``aot``, ``wvp`` and ``thumbnail``.
Skipped on purpose: the ``-jp2`` alternates (they point into ``sentinel-s2-l2a``, a requester-pays
bucket with JPEG 2000 files), the ``granule_metadata``/``tileinfo_metadata``/``product_metadata``
XML/JSON metadata assets and the 2025 ``cloud``/``snow`` probability JP2s.
"""

from __future__ import annotations

from datetime import timedelta

from ..bands import REFLECTANCE_BANDS, SCL, VISUAL, Band
from ..grid import Tile
from .cogs import COG_TYPE
from .scenes import Publication, tile_center

COLLECTION_ID = "sentinel-2-l2a"
EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
KEY_PREFIX = "sentinel-s2-l2a-cogs"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]
#: SCL class -> ``s2:*_percentage`` property (0 is relative to the tile, others to valid pixels).
SCL_PERCENTAGES = {
    1: "s2:saturated_defective_pixel_percentage", 2: "s2:dark_features_percentage",
    3: "s2:cloud_shadow_percentage", 4: "s2:vegetation_percentage",
    5: "s2:not_vegetated_percentage", 6: "s2:water_percentage",
    7: "s2:unclassified_percentage", 8: "s2:medium_proba_clouds_percentage",
    9: "s2:high_proba_clouds_percentage", 10: "s2:thin_cirrus_percentage",
    11: "s2:snow_ice_percentage",
}
#: asset key -> file name on sentinel-cogs
ASSET_FILES = {**{b.key: f"{b.s2_name}.tif" for b in REFLECTANCE_BANDS}, "scl": "SCL.tif",
               "visual": "TCI.tif", "aot": "AOT.tif", "wvp": "WVP.tif",
               "thumbnail": "thumbnail.jpg"}
ATMOSPHERE = {"aot": ("Aerosol optical thickness (AOT)", None),
              "wvp": ("Water vapour (WVP)", "cm")}


def item_prefix(pub: Publication) -> str:
    """``sentinel-s2-l2a-cogs/{zone}/{band}/{sq}/{year}/{month}/{id}`` (month unpadded)."""
    t, d = pub.acquisition.tile, pub.acquisition.day
    return (f"{KEY_PREFIX}/{t.zone}/{t.latitude_band}/{t.grid_square}/{d.year}/{d.month}/"
            f"{pub.id}")


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _eo(band: Band) -> dict:
    return {"name": band.key, "common_name": band.common_name, "description": band.description,
            "center_wavelength": band.center_wavelength,
            "full_width_half_max": band.full_width_half_max}


def _grid(tile: Tile, res: int) -> dict:
    t = tile.transform(res)
    return {"proj:shape": list(tile.shape(res)),
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f]}


def asset_definitions(tile: Tile, raster_offset: float) -> dict[str, dict]:
    """Every asset of an item without ``href`` (also the collection's ``item_assets``)."""
    assets: dict[str, dict] = {}
    for band in REFLECTANCE_BANDS:
        assets[band.key] = {
            "type": COG_TYPE, "title": band.title, "eo:bands": [_eo(band)], "gsd": band.resolution,
            **_grid(tile, band.resolution),
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                              "spatial_resolution": band.resolution, "scale": 0.0001,
                              "offset": raster_offset}],
            "roles": ["data", "reflectance"]}
    assets["scl"] = {"type": COG_TYPE, "title": SCL.description, "gsd": 20, **_grid(tile, 20),
                     "raster:bands": [{"nodata": 0, "data_type": "uint8",
                                       "spatial_resolution": 20}],
                     "roles": ["data", "reflectance"]}
    by_key = {b.key: b for b in REFLECTANCE_BANDS}
    assets["visual"] = {
        "type": COG_TYPE, "title": VISUAL.description,
        "eo:bands": [_eo(by_key[k]) for k in ("red", "green", "blue")], "gsd": 10,
        **_grid(tile, 10),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 10}] * 3,
        "roles": ["visual"]}
    for key, (title, unit) in ATMOSPHERE.items():
        rb = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
              "spatial_resolution": 20, **({"unit": unit} if unit else {}), "scale": 0.001,
              "offset": 0}
        assets[key] = {"type": COG_TYPE, "title": title, "gsd": 20, **_grid(tile, 20),
                       "raster:bands": [rb],
                       "roles": ["data", "reflectance"]}
    assets["thumbnail"] = {"type": "image/jpeg", "title": "Thumbnail image",
                           "roles": ["thumbnail"]}
    return assets


def percentages(scl_counts: list[int], total: int) -> dict[str, float]:
    """``s2:*_percentage`` and ``eo:cloud_cover`` from SCL class counts over the whole tile.

    As in ESA's metadata: no-data is a share of the tile, every other class a share of the
    valid (non-zero) pixels; cloud cover = medium + high probability clouds + thin cirrus.
    """
    valid = total - scl_counts[0]
    props = {"s2:nodata_pixel_percentage": round(100 * scl_counts[0] / total, 6)}
    for cls, name in SCL_PERCENTAGES.items():
        props[name] = round(100 * scl_counts[cls] / valid, 6) if valid else 0.0
    props["eo:cloud_cover"] = round(sum(100 * scl_counts[c] / valid for c in (8, 9, 10)), 6) \
        if valid else 0.0
    return props


def build_item(pub: Publication, scl_counts: list[int], hrefs: dict[str, str],
               canonical: str, s3_path: str, api_url: str | None = None) -> dict:
    """The STAC item (dict) of one publication."""
    acq, tile = pub.acquisition, pub.acquisition.tile
    bl = pub.baseline
    n_bl = bl.replace(".", "")
    sat = acq.platform[-1].upper()
    start = acq.time.strftime("%Y%m%dT%H%M%S")
    gen = pub.generation_time.strftime("%Y%m%dT%H%M%S")
    ds_start = (acq.time - timedelta(seconds=acq.time.second % 7 + 330)).strftime(
        "%Y%m%dT%H%M%S")
    absolute = f"{acq.absolute_orbit:06d}"
    centre = pub.centre
    created = _iso(pub.generation_time + timedelta(minutes=47, seconds=13))
    lon, lat = tile_center(tile)
    total = tile.shape(20)[0] * tile.shape(20)[1]
    props = {
        "created": created, "platform": acq.platform, "constellation": "sentinel-2",
        "instruments": ["msi"], "eo:cloud_cover": 0.0, "proj:epsg": tile.epsg,
        "proj:centroid": {"lat": round(lat, 5), "lon": round(lon, 5)},
        "mgrs:utm_zone": tile.zone, "mgrs:latitude_band": tile.latitude_band,
        "mgrs:grid_square": tile.grid_square, "grid:code": tile.grid_code,
        "view:azimuth": acq.view_azimuth, "view:incidence_angle": acq.view_incidence,
        "view:sun_azimuth": acq.sun_azimuth, "view:sun_elevation": acq.sun_elevation,
        "s2:degraded_msi_data_percentage": 0,
        **percentages(scl_counts, total),
        "s2:product_type": "S2MSI2A", "s2:processing_baseline": bl,
        "s2:product_uri": f"S2{sat}_MSIL2A_{start}_N{n_bl}_R{acq.track.relative_orbit:03d}_"
                          f"T{tile.id}_{gen}.SAFE",
        "s2:generation_time": pub.generation_time.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "s2:datatake_id": f"GS2{sat}_{start}_{absolute}_N{bl}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"S2{sat}_OPER_MSI_L2A_DS_{centre}_{gen}_S{ds_start}_N{bl}",
        "s2:granule_id": f"S2{sat}_OPER_MSI_L2A_TL_{centre}_{gen}_A{absolute}_T{tile.id}_N{bl}",
        "s2:tile_id": f"S2{sat}_OPER_MSI_L2A_TL_{centre}_{gen}_A{absolute}_T{tile.id}_N{bl}",
        "s2:reflectance_conversion_factor": _earth_sun_factor(acq.day),
        "datetime": _iso(acq.time), "s2:sequence": str(pub.sequence),
        "earthsearch:s3_path": s3_path,
        "earthsearch:payload_id": "roda-sentinel2/workflow-sentinel2-to-stac/"
                                  f"{(acq.seed * 31 + pub.sequence) % 2**128:032x}",
        "earthsearch:boa_offset_applied": pub.flag,
        "processing:software": {"sentinel2-to-stac": "0.1.1"},
        "updated": created,
    }
    assets = asset_definitions(tile, pub.raster_offset)
    for key, asset in assets.items():
        asset["href"] = hrefs[key]
    assets = {k: {"href": v.pop("href"), **v} for k, v in assets.items()}
    api = (api_url or EARTH_SEARCH).rstrip("/")
    coll = f"{api}/collections/{COLLECTION_ID}"
    links = [
        {"rel": "self", "type": "application/geo+json", "href": f"{coll}/items/{pub.id}"},
        {"rel": "canonical", "href": canonical, "type": "application/json"},
        {"rel": "license",
         "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"},
        {"rel": "derived_from", "type": "application/geo+json",
         "href": f"{api}/collections/sentinel-2-l1c/items/{pub.id.replace('_L2A', '_L1C')}"},
        {"rel": "parent", "type": "application/json", "href": coll},
        {"rel": "collection", "type": "application/json", "href": coll},
        {"rel": "root", "type": "application/json", "href": api},
        {"rel": "thumbnail", "href": f"{coll}/items/{pub.id}/thumbnail"},
    ]
    return {"type": "Feature", "stac_version": "1.0.0", "id": pub.id, "properties": props,
            "geometry": tile.footprint(densify=4), "links": links, "assets": assets,
            "bbox": tile.bbox(), "stac_extensions": list(STAC_EXTENSIONS),
            "collection": COLLECTION_ID}


def _earth_sun_factor(day) -> float:
    """ESA's reflectance conversion factor (1 / d^2, d in AU) for a date."""
    import math

    doy = day.timetuple().tm_yday
    return 1 / (1 - 0.01673 * math.cos(0.0172 * (doy - 4))) ** 2


def build_collection(tile: Tile | None = None) -> dict:
    """A realistic ``sentinel-2-l2a`` collection (Earth Search v1's, with item_assets)."""
    from ..grid import parse_tile

    item_assets = asset_definitions(tile or parse_tile("33UUP"), -0.1)
    for asset in item_assets.values():
        asset.pop("proj:transform", None)
        asset.pop("proj:shape", None)
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A",
        "description": "Global Sentinel-2 data from the Multispectral Instrument (MSI) onboard "
                       "Sentinel-2 (synthetic archive generated by cloudfree synth, shaped like "
                       "Earth Search v1)",
        "keywords": ["sentinel", "earth observation", "esa", "synthetic"],
        "license": "proprietary",
        "providers": [
            {"name": "ESA", "roles": ["producer"], "url": "https://earth.esa.int/web/guest/home"},
            {"name": "Sinergise", "roles": ["processor"], "url": "https://registry.opendata.aws/sentinel-2/"},
            {"name": "AWS", "roles": ["host"], "url": "http://sentinel-pds.s3-website.eu-central-1.amazonaws.com/"},
            {"name": "Element 84", "roles": ["processor"], "url": "https://element84.com"},
            {"name": "cloudfree synth", "roles": ["processor"]},
        ],  # fmt: skip
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]}},
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b", "sentinel-2c"],
            "constellation": ["sentinel-2"], "instruments": ["msi"], "gsd": [10, 20, 60],
            "view:off_nadir": [0],
            "sci:citation": ["Copernicus Sentinel data [Year]"],
            "eo:bands": [_eo(b) for b in REFLECTANCE_BANDS],
        },
        "item_assets": item_assets,
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
            "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "links": [{"rel": "license",
                   "href": "https://sentinel.esa.int/documents/247904/690755/"
                           "Sentinel_Data_Legal_Notice"}],
    }
