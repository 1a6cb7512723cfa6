"""Planning a synthetic year of acquisitions for one tile: orbits, dates, weather, baselines.

Everything here is metadata (no pixels), derived deterministically from the tile, year and seed:

- **orbits**: Sentinel-2's 143 relative orbits are laid out as ground tracks ``360/143`` degrees
  apart; a tile is seen from the 2-3 tracks whose 290 km swath reaches it. Each track is revisited
  every 10 days per platform, the two platforms 5 days apart (one acquisition per track every
  5 days). The track farthest from the tile carries a **swath edge** (nodata beyond a slanted
  line); it is placed through the data area so every AOI exercises it.
- **weather**: cloud cover drawn per acquisition (a third nearly clear, a third broken, a third
  overcast), optional thin cirrus, cloud height (for the shadow offset), snow in winter months.
- **publications**, following Earth Search v1 ``sentinel-2-l2a`` (see ``cloudfree.harmonize``
  for the issue threads): each acquisition is published once as ``_0`` with the processing
  baseline ESA used on that date. Baseline >= 04.00 items were mostly harmonised by the
  publisher (``earthsearch:boa_offset_applied`` true, pixels *without* +1000); a share
  (``unharmonised_share``) was not (flag false, pixels *with* +1000). A share of acquisitions
  carries a pre-04.00 baseline (no offset, flag false) and some of those are published again
  as ``_1`` (baseline 05.00, flag true, harmonised pixels: identical DNs, as the real
  ``_0``/``_1`` pairs of 2020 in ``shared/realdata``). On a few >= 04.00 items the flag is
  wrong, in both directions (recorded in the truth manifest). ``raster:bands`` says offset
  -0.1 on every >= 04.00 item, whatever its pixels, like the real ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from ..errors import InputError
from ..grid import Tile

N_ORBITS = 143
TRACK_SPACING_DEG = 360.0 / N_ORBITS
SWATH_HALF_KM = 145.0
TILE_HALF_KM = 54.9
#: (first day, baseline) of ESA's L2A processing baselines (the ones Earth Search carries).
BASELINE_HISTORY = (
    (date(2015, 1, 1), "02.07"), (date(2018, 5, 23), "02.08"), (date(2018, 11, 6), "02.11"),
    (date(2019, 7, 8), "02.13"), (date(2020, 1, 28), "02.14"), (date(2021, 6, 30), "03.00"),
    (date(2021, 7, 27), "03.01"), (date(2022, 1, 25), "04.00"), (date(2022, 12, 6), "05.09"),
    (date(2023, 12, 13), "05.10"), (date(2024, 7, 23), "05.11"),
)  # fmt: skip
REPROCESSED_BASELINE = "05.00"
LAUNCH = {"sentinel-2a": date(2015, 6, 23), "sentinel-2b": date(2017, 3, 7),
          "sentinel-2c": date(2024, 9, 5)}


def nominal_baseline(day: date) -> str:
    """The processing baseline ESA used for data acquired on ``day``."""
    current = BASELINE_HISTORY[0][1]
    for start, baseline in BASELINE_HISTORY:
        if day >= start:
            current = baseline
    return current


def has_offset(baseline: str) -> bool:
    """Baselines 04.00 and later carry the +1000 BOA offset in the DNs."""
    return tuple(int(p) for p in baseline.split(".")) >= (4, 0)


def platforms_for(day: date) -> tuple[str, str | None]:
    """(platform on the track's phase, platform 5 days later) flying on a date."""
    if day < date(2017, 7, 1):
        return ("sentinel-2a", None)
    if day >= date(2025, 1, 21):
        return ("sentinel-2c", "sentinel-2b")
    return ("sentinel-2a", "sentinel-2b")


@dataclass(frozen=True)
class Track:
    """One relative orbit seen from a tile."""

    index: int  # ground-track index 0..142 (west to east)
    relative_orbit: int
    distance_km: float  # track centre minus tile centre, east positive
    phase: int  # day of the 10-day cycle on which the first platform passes
    swath_edge: bool

    @property
    def lon(self) -> float:
        return -180 + (self.index + 0.5) * TRACK_SPACING_DEG


@dataclass(frozen=True)
class Weather:
    """The atmosphere of one acquisition."""

    cloud_cover: float  # target fraction of clouds (8/9) in 0..1
    cirrus: float  # target fraction of thin cirrus
    cloud_height_m: float
    snow: float  # target snow fraction of land


@dataclass
class Acquisition:
    """One datatake over the tile (may be published as several items)."""

    index: int
    tile: Tile
    time: datetime
    platform: str
    track: Track
    weather: Weather
    sun_azimuth: float
    sun_elevation: float
    view_azimuth: float
    view_incidence: float
    seed: int
    publications: list[Publication] = field(default_factory=list)

    @property
    def day(self) -> date:
        return self.time.date()

    @property
    def absolute_orbit(self) -> int:
        days = (self.day - LAUNCH[self.platform]).days
        cycles = int(days * 14.3) // N_ORBITS
        return cycles * N_ORBITS + self.track.relative_orbit

    def shadow_offset_m(self) -> tuple[float, float]:
        """(dx, dy) in metres from a cloud to its shadow: away from the sun."""
        length = self.weather.cloud_height_m / math.tan(math.radians(max(self.sun_elevation, 8)))
        az = math.radians(self.sun_azimuth)
        return (-math.sin(az) * length, -math.cos(az) * length)


@dataclass
class Publication:
    """One STAC item of an acquisition (``_0`` or a reprocessed ``_1``)."""

    acquisition: Acquisition
    sequence: int
    baseline: str
    flag: bool  # earthsearch:boa_offset_applied as published
    generation_time: datetime
    centre: str  # processing centre in the granule/datastrip ids
    offset: bool = False  # whether the pixels carry the +1000 BOA offset (the truth)

    @property
    def flag_wrong(self) -> bool:
        """The flag contradicts the pixels (true means "offset removed", on >= 04.00 items)."""
        if has_offset(self.baseline):
            return self.flag == self.offset
        return self.flag  # before 04.00 there never was an offset to remove: false

    @property
    def raster_offset(self) -> float:
        """``raster:bands`` offset: -0.1 on every >= 04.00 item, as Earth Search declares."""
        return -0.1 if has_offset(self.baseline) else 0.0

    @property
    def id(self) -> str:
        a = self.acquisition
        return f"S2{a.platform[-1].upper()}_{a.tile.id}_{a.day:%Y%m%d}_{self.sequence}_L2A"


def sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """(azimuth, elevation) in degrees (NOAA-style approximation, good to ~1 degree)."""
    doy = when.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (doy - 1 + (when.hour - 12) / 24)
    decl = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
            - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma))
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                       - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    minutes = when.hour * 60 + when.minute + when.second / 60
    hour_angle = math.radians((minutes + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zen = (math.sin(phi) * math.sin(decl)
               + math.cos(phi) * math.cos(decl) * math.cos(hour_angle))
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = math.degrees(math.atan2(math.sin(hour_angle),
                                 math.cos(hour_angle) * math.sin(phi)
                                 - math.tan(decl) * math.cos(phi))) + 180
    return (az % 360, 90 - math.degrees(zen))


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across runs and Python versions)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def tile_center(tile: Tile) -> tuple[float, float]:
    """(lon, lat) of the tile's centre."""
    from rasterio.warp import transform as warp

    minx, miny, maxx, maxy = tile.bounds
    (lon,), (lat,) = warp(tile.crs, "EPSG:4326", [(minx + maxx) / 2], [(miny + maxy) / 2])
    return lon, lat


def tracks_for(tile: Tile) -> list[Track]:
    """The 2-3 ground tracks whose swath covers the tile, nearest first."""
    lon, lat = tile_center(tile)
    km_per_deg = 111.32 * max(math.cos(math.radians(lat)), 0.05)
    centre_index = int((lon + 180) // TRACK_SPACING_DEG)
    found = []
    for index in range(centre_index - 4, centre_index + 5):
        track_lon = -180 + (index % N_ORBITS + 0.5) * TRACK_SPACING_DEG
        dist = ((track_lon - lon + 180) % 360 - 180) * km_per_deg
        if abs(dist) < SWATH_HALF_KM + TILE_HALF_KM:
            found.append((abs(dist), index % N_ORBITS, dist))
    found.sort()
    found = found[:3]
    if len(found) < 2:  # near the equator: pretend the neighbour reaches too
        found.append((abs(found[0][2]) + 1, (found[0][1] + 1) % N_ORBITS, found[0][2] + 150))
    farthest = max(range(len(found)), key=lambda i: found[i][0])
    return [Track(index=idx, relative_orbit=(idx * 10) % N_ORBITS + 1, distance_km=dist,
                  phase=(idx * 3) % 10, swath_edge=(i == farthest))
            for i, (_, idx, dist) in enumerate(found)]


def candidate_passes(tile: Tile, year: int) -> list[tuple[datetime, str, Track]]:
    """Every (time, platform, track) over the tile in the year, sorted by time."""
    tracks = tracks_for(tile)
    _, lat = tile_center(tile)
    passes = []
    start = date(year, 1, 1)
    for day_no in range((date(year + 1, 1, 1) - start).days):
        day = start + timedelta(days=day_no)
        epoch = (day - date(2017, 1, 1)).days
        first, second = platforms_for(day)
        for track in tracks:
            phase = (epoch - track.phase) % 10
            platform = first if phase == 0 else second if phase == 5 else None
            if platform is None:
                continue
            # descending node at 10:30 local mean solar time, north passes a little earlier
            hours = 10.5 - track.lon / 15 - lat / 900
            when = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hours)
            passes.append((when, platform, track))
    passes.sort(key=lambda p: p[0])
    return passes


#: Weather regimes: (share nearly clear, share broken, then overcast) and their cover ranges.
#: ``normal``: a third each. ``cloudy`` (tropics, monsoon, northern winters; issue 8): 20 %
#: nearly clear, 30 % broken (0.2-0.6), 50 % overcast (0.6-0.95): with 12 acquisitions about
#: 12 x (0.2 x 0.97 + 0.3 x 0.6 + 0.5 x 0.22) = 5.8 cloud-free observations per pixel, of
#: which shadows, cirrus and cloud edges leave about 3-5 clear.
CLOUDINESS = {
    "normal": ((0.35, (0.0, 0.05)), (0.35, (0.1, 0.5)), (0.6, 0.97)),
    "cloudy": ((0.20, (0.0, 0.05)), (0.30, (0.2, 0.6)), (0.6, 0.95)),
}


def draw_weather(rng: np.random.Generator, day: date, lat: float,
                 cloudiness: str = "normal") -> Weather:
    """Cloud/cirrus/snow fractions of one acquisition (``cloudiness``: a key of CLOUDINESS)."""
    if cloudiness not in CLOUDINESS:
        raise InputError(f"unknown cloudiness {cloudiness!r}; valid: {list(CLOUDINESS)}")
    (p_clear, clear_range), (p_broken, broken_range), overcast_range = CLOUDINESS[cloudiness]
    r = rng.random()
    if r < p_clear:
        cover = rng.uniform(*clear_range)
    elif r < p_clear + p_broken:
        cover = rng.uniform(*broken_range)
    else:
        cover = rng.uniform(*overcast_range)
    cirrus = rng.uniform(0.02, 0.15) if rng.random() < 0.5 else 0.0
    winter = {12: 0.5, 1: 0.6, 2: 0.45, 3: 0.15, 11: 0.15} if lat >= 0 else \
        {6: 0.5, 7: 0.6, 8: 0.45, 9: 0.15, 5: 0.15}
    snow = winter.get(day.month, 0.0) * rng.uniform(0.4, 1.0) if abs(lat) > 35 else 0.0
    return Weather(cloud_cover=float(cover), cirrus=float(cirrus),
                   cloud_height_m=float(rng.uniform(1000, 3000)), snow=float(snow))


def plan_acquisitions(tile: Tile, year: int, scenes: int, seed: int,
                      cloudiness: str = "normal") -> list[Acquisition]:
    """Pick ``scenes`` passes spread over the year and give each its weather and geometry."""
    if scenes < 1:
        raise InputError(f"scenes must be >= 1, got {scenes}")
    passes = candidate_passes(tile, year)
    if scenes > len(passes):
        raise InputError(f"{tile.id} has only {len(passes)} passes in {year}; asked {scenes}")
    rng = np.random.default_rng(stable_seed("plan", tile.id, year, seed))
    step = len(passes) / scenes
    jitter = max(1, int(step))  # floor((i+1)*step) - floor(i*step) >= floor(step): unique picks
    picks = [int(i * step) + int(rng.integers(0, jitter)) for i in range(scenes)]
    lon, lat = tile_center(tile)
    acquisitions = []
    for n, i in enumerate(picks):
        when, platform, track = passes[i]
        when = when + timedelta(seconds=float(rng.uniform(0, 30)))
        when = when.replace(microsecond=int(rng.integers(0, 1000)) * 1000)
        az, el = sun_position(when, lon, lat)
        acquisitions.append(Acquisition(
            index=n, tile=tile, time=when, platform=platform, track=track,
            weather=draw_weather(rng, when.date(), lat, cloudiness),
            sun_azimuth=az, sun_elevation=el,
            view_azimuth=100.0 + rng.uniform(0, 10) if track.distance_km > 0 else
            280.0 + rng.uniform(0, 10),
            view_incidence=abs(track.distance_km) / 290 * 12 + rng.uniform(0.5, 1.5),
            seed=stable_seed("acq", tile.id, year, seed, n)))
    return acquisitions


def _generation(acq: Acquisition, rng: np.random.Generator, reprocessed: bool) -> datetime:
    if reprocessed:
        return datetime(2023, 6, 1, tzinfo=UTC) + timedelta(
            days=int(rng.integers(0, 60)), seconds=int(rng.integers(0, 86400)))
    return acq.time.replace(microsecond=0) + timedelta(seconds=int(rng.integers(2400, 14000)))


def _centre(acq: Acquisition, baseline: str, reprocessed: bool) -> str:
    if reprocessed:
        return "S2RP"
    if has_offset(baseline):
        return f"2{acq.platform[-1].upper()}PS"
    return "MPS_"


def plan_publications(acquisitions: list[Acquisition], seed: int, legacy_share: float = 0.2,
                      duplicate_share: float = 0.5, unharmonised_share: float = 0.3,
                      wrong_flag_share: float = 0.08) -> None:
    """Attach the published items to each acquisition (baselines, offsets, flags, ``_1``s)."""
    if not acquisitions:
        return
    tile, year = acquisitions[0].tile, acquisitions[0].day.year
    rng = np.random.default_rng(stable_seed("publish", tile.id, year, seed))
    n = len(acquisitions)
    order = rng.permutation(n)
    modern = [i for i in order if has_offset(nominal_baseline(acquisitions[i].day))]
    n_legacy = max(1, round(legacy_share * n)) if n >= 3 else 0
    legacy = set(modern[:n_legacy])  # pre-04.00 for dates whose nominal baseline is newer
    natural_old = [i for i in order if i not in modern]
    old = [i for i in order if i in legacy or i in natural_old]
    n_dup = max(1, round(duplicate_share * len(old))) if old else 0
    duplicated = set(old[:n_dup])
    new = [i for i in modern if i not in legacy]
    n_raw = max(1, round(unharmonised_share * len(new))) if len(new) >= 3 else 0
    unharmonised = set(new[len(new) - n_raw:])  # still carry +1000 (flag false)
    for i, acq in enumerate(acquisitions):
        base = nominal_baseline(acq.day)
        if i in legacy:
            base = "02.14" if acq.day.month <= 6 else "03.01"
        raw = has_offset(base) and i in unharmonised
        flag = has_offset(base) and not raw
        acq.publications = [Publication(acq, 0, base, flag, _generation(acq, rng, False),
                                        _centre(acq, base, False), offset=raw)]
        if i in duplicated:
            acq.publications.append(Publication(
                acq, 1, REPROCESSED_BASELINE, True, _generation(acq, rng, True), "S2RP",
                offset=False))
    _plant_wrong_flags(acquisitions, rng, wrong_flag_share)


def _plant_wrong_flags(acquisitions: list[Acquisition], rng: np.random.Generator,
                       share: float) -> None:
    """Invert the flag of some >= 04.00 ``_0`` items: at least one each way when possible."""
    pubs = [p for a in acquisitions for p in a.publications
            if p.sequence == 0 and has_offset(p.baseline)]
    if len(pubs) < 4:
        return
    harmonised = [p for p in pubs if not p.offset]
    raw = [p for p in pubs if p.offset]
    chosen = []
    for group in (harmonised, raw):
        if group:
            chosen.append(group[int(rng.integers(0, len(group)))])
    extra = max(0, round(share * len(pubs)) - len(chosen))
    rest = [p for p in pubs if p not in chosen]
    for k in rng.permutation(len(rest))[:extra]:
        chosen.append(rest[int(k)])
    for p in chosen:
        p.flag = not p.flag
