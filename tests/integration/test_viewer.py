"""Issue 9 end to end on the session's published outputs (no pipeline run of its own when the
end-to-end test ran first, as in `make test`): ``cloudfree catalog load`` into the local
pgstac, searched with pystac-client and the stac-geoparquet with DuckDB by bbox, datetime and
``grid:code``; then ``cloudfree view`` driven in headless Chromium: pan to the tile, imagery
drawn, a click shows the COG's values; the screenshot goes to ``out/demo/viewer.png``.
One test, under a minute (CI budget)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.warp import transform

from cloudfree import storage
from cloudfree.catalog_search import index_records, load, search_parquet
from cloudfree.layout import COLLECTION_ID
from cloudfree.pipeline import run

from .conftest import SMALL, wait_execution, wait_for

TILE, YEAR = SMALL["tile"], SMALL["year"]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "demo" / "viewer.png"
BACKGROUND = (0x1D, 0x27, 0x33)  # the page's map background (viewer.css / viewer.js)


@pytest.fixture(scope="module")
def published(deployed_stack, small_archive) -> run.Deployed:
    """The small tile's published item: the end-to-end test's, or (run alone) one execution."""
    deployed = run.find_stack(deployed_stack.stack_name)
    item = deployed.settings.layout.item(YEAR, TILE)
    if not storage.exists(item):
        arn = run.start(deployed, run.execution_input(YEAR, [TILE], None, {"scenes": 6}),
                        name=f"viewer-{int(time.time())}")
        assert wait_execution(arn)["status"] == "SUCCEEDED"
        wait_for(lambda: storage.exists(item), 180, "the published item")
    return deployed


def _ids(search) -> list[str]:
    return sorted(i.id for i in search.items())


def _page_pixels(page) -> np.ndarray:
    png = page.locator("#map").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run make setup")
def test_catalog_search_and_viewer(published, local_env, tmp_path):
    from playwright.sync_api import sync_playwright
    from pystac_client import Client

    from cloudfree.viewer.server import ViewerServer, stack_catalog

    settings = published.settings
    api = local_env["STAC_API_URL"]
    t0 = time.monotonic()
    # --- the catalog: loaded, then again (incremental: nothing to load) --------------------
    parquet = tmp_path / "items.parquet"
    first = load(settings, api, parquet, force=True)
    n = len(index_records(settings))
    assert first.loaded == n >= 1
    again = load(settings, api, None)
    assert (again.loaded, again.unchanged) == (0, n)
    item_id = f"{TILE}_{YEAR}"
    lon0, lat0, lon1, lat1 = SMALL["aoi"]
    inside, far = [lon0, lat0, lon1, lat1], [-70.0, -10.0, -69.0, -9.0]
    grid = {"op": "=", "args": [{"property": "grid:code"}, f"MGRS-{TILE}"]}
    client = Client.open(api)
    assert item_id in _ids(client.search(collections=[COLLECTION_ID], bbox=inside))
    assert item_id not in _ids(client.search(collections=[COLLECTION_ID], bbox=far))
    assert item_id in _ids(client.search(collections=[COLLECTION_ID], datetime=f"{YEAR}-07"))
    assert item_id not in _ids(client.search(collections=[COLLECTION_ID],
                                             datetime=f"{YEAR - 3}"))
    assert _ids(client.search(collections=[COLLECTION_ID], filter=grid,
                              filter_lang="cql2-json", datetime=str(YEAR))) == [item_id]
    # the same three questions to the geoparquet, with DuckDB
    assert item_id in [r["id"] for r in search_parquet(parquet, bbox=inside)]
    assert search_parquet(parquet, bbox=far) == []
    assert [r["id"] for r in search_parquet(parquet, datetime_range=str(YEAR),
                                            grid_code=f"MGRS-{TILE}")] == [item_id]
    assert search_parquet(parquet, datetime_range=str(YEAR - 3)) == []
    t_catalog = time.monotonic() - t0

    # --- the viewer in headless Chromium ----------------------------------------------------
    item = storage.read_json(settings.layout.item(YEAR, TILE))
    server = ViewerServer(stack_catalog(settings)).start()
    center = ((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.wait_for_function("window.cloudfreeViewer && window.cloudfreeViewer.ready",
                                   timeout=20000)
            # start far away (the world), then pan and zoom onto the tile's data
            page.evaluate("window.cloudfreeViewer.map.jumpTo({center: [0, 20], zoom: 2})")
            page.click(f'a[data-item="{item_id}"]')  # the item list: zoom to its data
            page.wait_for_function(f"window.cloudfreeViewer.zoomedTo === '{item_id}' && "
                                   "window.cloudfreeViewer.map.getZoom() > 10", timeout=10000)
            west, south, east, north = page.evaluate(
                "window.cloudfreeViewer.map.getBounds().toArray().flat()")
            zoom = page.evaluate("window.cloudfreeViewer.map.getZoom()")
            # the tile is 110 km wide (zoom ~8); its data, the ~2 km AOI, brings zoom >= 12
            assert west < center[0] < east and south < center[1] < north and zoom >= 12, zoom
            page.evaluate(f"window.cloudfreeViewer.map.jumpTo({{center: {list(center)}, "
                          "zoom: 15})")
            idle = ("window.cloudfreeViewer.map.loaded() && "
                    "window.cloudfreeViewer.map.areTilesLoaded()")
            page.wait_for_timeout(300)
            page.wait_for_function(idle, timeout=30000)
            pixels = _page_pixels(page)
            imagery = (np.abs(pixels - BACKGROUND).sum(axis=2) > 30).mean()
            assert imagery > 0.5, f"only {imagery:.0%} of the map is drawn"
            assert pixels.reshape(-1, 3).std(axis=0).min() > 5  # texture, not a flat fill
            # click the centre: the panel shows the COG's values there
            x, y = page.evaluate(f"(() => {{ const p = window.cloudfreeViewer.map.project("
                                 f"{list(center)}); return [p.x, p.y]; }})()")
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_selector('#values[data-state="shown"]', timeout=15000)
            shown = {k: page.inner_text(f'#values td[data-key="{k}"]')
                     for k in ("red", "nir", "contributing scenes")}
            point = page.evaluate("window.cloudfreeViewer.lastPoint")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            # the count layer and its legend
            page.select_option("#layer", "count")
            page.wait_for_function("document.getElementById('legend-title').textContent"
                                   ".startsWith('Valid observations')", timeout=10000)
            assert page.inner_text("#legend-max") == str(item["properties"][
                "cloudfree:observations"]["max"])
            page.wait_for_timeout(300)
            page.wait_for_function(idle, timeout=30000)
            counts = _page_pixels(page)
            page.screenshot(path=str(SCREENSHOT.with_name("viewer-count.png")))
            browser.close()
    finally:
        server.stop()
    assert not errors, errors
    (px,), (py,) = transform("EPSG:4326", "EPSG:3857", [point["lon"]], [point["lat"]])
    with rasterio.Env(**storage.gdal_env_options()):
        for key in ("red", "nir", "count"):
            with rasterio.open(item["assets"][key]["href"]) as src:
                want = int(next(src.sample([(px, py)]))[0])
            if key == "count":
                assert int(shown["contributing scenes"].split()[0]) == want & 127 >= 1
            else:
                assert int(shown[key]) == want > 0, key
    # the count layer is drawn in viridis (a green-blue-yellow ramp), not the visual image
    changed = (np.abs(counts - pixels).sum(axis=2) > 30).mean()
    assert changed > 0.5, f"the count layer changed only {changed:.0%} of the map"
    assert abs(point["lon"] - center[0]) < 1e-3 and abs(point["lat"] - center[1]) < 1e-3
    print(f"\nviewer test: catalog {t_catalog:.1f}s, total {time.monotonic() - t0:.1f}s, "
          f"{imagery:.0%} of the map drawn, clicked {shown}")
