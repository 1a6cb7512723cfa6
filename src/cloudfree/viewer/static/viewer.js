// cloudfree viewer: published composites as raster tiles from /api/tiles, one source per item.
// window.cloudfreeViewer exposes the map and the last point answer (the headless test uses them).
(async function () {
  const $ = (id) => document.getElementById(id);
  const state = { items: [], layer: "visual", lastPoint: null };
  window.cloudfreeViewer = state;

  const map = new maplibregl.Map({
    container: "map",
    style: { version: 8, sources: {}, layers: [
      { id: "background", type: "background", paint: { "background-color": "#1d2733" } }] },
    center: [0, 20], zoom: 1.5, maxZoom: 18, attributionControl: false,
  });
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.addControl(new maplibregl.ScaleControl(), "bottom-left");
  map.addControl(new maplibregl.AttributionControl({
    customAttribution: "Contains modified Copernicus Sentinel data" }));
  state.map = map;

  const params = new URLSearchParams(location.search);
  const [layers, items] = await Promise.all([
    fetch("/api/layers").then((r) => r.json()), fetch("/api/items").then((r) => r.json())]);
  state.items = items;
  for (const l of layers) $("layer").add(new Option(l.label, l.value));
  $("layer").add(new Option("Custom bands (r,g,b below)", "custom"));

  function layerName() {
    const v = $("layer").value;
    return v === "custom" ? $("combo").value.replace(/\s+/g, "") : v;
  }
  function tileUrl(item) {
    const q = new URLSearchParams({ layer: state.layer });
    if (!["visual", "count"].includes(state.layer)) q.set("stretch", $("stretch").value);
    return `${location.origin}/api/tiles/${item.id}/{z}/{x}/{y}.png?${q}`;
  }
  async function updateLegend() {
    const q = new URLSearchParams({ layer: state.layer });
    if (items.length) q.set("item", items[0].id);
    if (!["visual", "count"].includes(state.layer)) q.set("stretch", $("stretch").value);
    const lg = await fetch(`/api/legend?${q}`).then((r) => r.json());
    if (lg.error) { $("legend-title").textContent = lg.error; return; }
    $("legend-title").textContent = lg.title;
    $("legend-ramp").style.display = lg.colors.length ? "" : "none";
    $("legend-ramp").style.background = `linear-gradient(to right, ${lg.colors.join(",")})`;
    $("legend-min").textContent = lg.min ?? "";
    $("legend-max").textContent = lg.max ?? "";
  }
  function setLayer() {
    state.layer = layerName();
    for (const item of items) map.getSource(`item-${item.id}`).setTiles([tileUrl(item)]);
    updateLegend();
  }

  // zoom to where the item has data (a tile computed for a small AOI is mostly empty)
  async function zoomTo(item) {
    const r = await fetch(`/api/extent?item=${encodeURIComponent(item.id)}`);
    const bbox = r.ok ? (await r.json()).bbox : item.bbox;
    // the chosen item is drawn on top and answers clicks (tiles of several years overlap)
    map.moveLayer(`item-${item.id}`);
    map.moveLayer(`outline-${item.id}`);
    map.fitBounds(bbox, { padding: 20, animate: false });
    state.zoomedTo = item.id;
  }

  await new Promise((resolve) => (map.loaded() ? resolve() : map.once("load", resolve)));
  state.layer = params.get("layer") || "visual";
  $("layer").value = state.layer;
  for (const item of items) {
    map.addSource(`item-${item.id}`, { type: "raster", tiles: [tileUrl(item)], tileSize: 256,
      bounds: item.bbox, maxzoom: 14 });
    map.addLayer({ id: `item-${item.id}`, type: "raster", source: `item-${item.id}` });
    map.addSource(`outline-${item.id}`, { type: "geojson", data: item.geometry });
    map.addLayer({ id: `outline-${item.id}`, type: "line", source: `outline-${item.id}`,
      paint: { "line-color": "#ffcc00", "line-width": 1 } });
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.textContent = `${item.tile} ${item.year}`;
    a.dataset.item = item.id;
    a.onclick = () => zoomTo(item);
    li.appendChild(a);
    $("items").appendChild(li);
  }
  updateLegend();
  $("layer").onchange = setLayer;
  $("combo").onchange = () => { $("layer").value = "custom"; setLayer(); };
  $("stretch").onchange = setLayer;

  map.on("click", async (e) => {
    const { lng, lat } = e.lngLat;
    const chosen = state.zoomedTo ? `&item=${encodeURIComponent(state.zoomedTo)}` : "";
    const r = await fetch(`/api/point?lon=${lng}&lat=${lat}${chosen}`);
    const v = await r.json();
    state.lastPoint = v;
    const box = $("values");
    if (!r.ok) { box.textContent = v.error; box.dataset.state = "empty"; return; }
    const rows = [["item", v.item], ["lon, lat", `${lng.toFixed(5)}, ${lat.toFixed(5)}`],
      ["contributing scenes", v.count + (v.snow ? " (snow only)" : "")],
      ["visual", v.visual.join(", ")], ...Object.entries(v.bands)];
    box.innerHTML = "<table>" + rows.map(([k, x]) =>
      `<tr><td>${k}</td><td class="v" data-key="${k}">${x}</td></tr>`).join("") + "</table>";
    box.dataset.state = "shown";
    new maplibregl.Popup().setLngLat(e.lngLat)
      .setHTML(`${v.count} scenes<br>${Object.entries(v.bands).slice(1, 4)
        .map(([k, x]) => `${k} ${x}`).join("<br>")}`).addTo(map);
  });
  const first = items.find((i) => i.id === params.get("item")) || items[0];
  if (first) await zoomTo(first);
  state.ready = true;
})();
