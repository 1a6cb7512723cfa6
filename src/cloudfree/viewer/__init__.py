"""``cloudfree view``: the published composites on a map.

``layers`` turns a layer name (``visual``, ``count``, a band key, or three band keys) into
PNG map tiles, point values and a legend with rio-tiler, straight from the published COGs;
``server`` is a small HTTP server (standard library) serving them, the item list and the
MapLibre GL page in ``static/`` (MapLibre itself is installed from npm by ``scripts/setup.sh``
into ``node_modules/``, not committed). Not for the Lambda layer: CLI and tests only.
"""
