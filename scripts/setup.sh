#!/usr/bin/env bash
# Install everything cloudfree needs on a fresh machine (idempotent).
#  - Debian: PostGIS for the machine's PostgreSQL 15
#  - venvs: .venv (project), .venv-ministack (MiniStack + SAM translator),
#           .venv-sam (SAM CLI, cfn-lint), .venv-stacapi (stac-fastapi-pgstac, pypgstac),
#           .venv-lint (checkov: it pins boto3/botocore below what SAM CLI needs; ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! ls /usr/share/postgresql/15/extension/postgis.control >/dev/null 2>&1; then
  echo "[setup] installing PostGIS (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql-15-postgis-3 >/dev/null
fi

# uv installs the venvs (about 10x faster than pip here: parallel downloads and installs); it
# lives in its own small venv, bootstrapped with pip. UV=pip falls back to plain pip.
UV=${UV:-uv}
if [[ "$UV" == uv && ! -x .venv-uv/bin/uv ]]; then
  "$PY" -m venv .venv-uv
  .venv-uv/bin/pip install -q uv 2>&1 | { grep -v "^WARNING: Location" || true; }
fi

# the viewer's headless browser test drives Debian's chromium (Playwright's own browser builds
# are downloads outside the package registries); MapLibre GL comes from npm (below)
# Ask apt only for what is missing: a machine whose Node.js comes from NodeSource already has npm,
# and Debian's npm package conflicts with that nodejs ("nodejs : Conflicts: npm"), which fails the
# whole install (seen on a fresh machine on 2026-12-02).
want_apt=()
command -v chromium >/dev/null 2>&1 || want_apt+=(chromium)
command -v npm >/dev/null 2>&1 || want_apt+=(npm)
if ((${#want_apt[@]})); then
  echo "[setup] installing ${want_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want_apt[@]}" >/dev/null
fi

mkvenv() {  # mkvenv DIR REQFILE [extra pip args]
  local dir=$1 req=$2; shift 2
  local stamp="$dir/.req.sha"
  # (the "bytecode" line: venvs built before they carried compiled bytecode are rebuilt once)
  local want; want=$( (cat "$req" "$@" 2>/dev/null; echo bytecode) | sha1sum | cut -c1-40)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  echo "[setup] building $dir from $req"
  if [[ "$UV" == uv ]]; then
    # --seed: pip and setuptools in the venv too (the layer build and editable installs use them)
    [[ -x "$dir/bin/python" ]] || .venv-uv/bin/uv venv -q --seed --python "$PY" "$dir"
    .venv-uv/bin/uv pip install -q --python "$dir/bin/python" -r "$req"
    # uv (unlike pip) installs no .pyc, and where PYTHONDONTWRITEBYTECODE is set (this
    # workplace's shells) none is ever written, so every process compiled every module it
    # imported: ~0.7 s per `cloudfree` command, more for sam. (uv's --compile-bytecode skips an
    # install that finds nothing to do, so a venv built before would stay without.)
    "$dir/bin/python" -m compileall -q -j 0 "$("$dir/bin/python" -c \
      'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
  else
    [[ -x "$dir/bin/python" ]] || "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip "setuptools>=68" 2>&1 | { grep -v "^WARNING: Location" || true; }
    "$dir/bin/pip" install -q -r "$req" 2>&1 | { grep -v "^WARNING: Location" || true; }
  fi
  echo "$want" > "$stamp"
}

# MapLibre GL for `cloudfree view`, vendored from npm into the package (gitignored, not in the
# Lambda layer), again when package-lock.json changes; in the background (network-bound)
viewer=src/cloudfree/viewer
npm_pid=
if [[ ! -f $viewer/node_modules/maplibre-gl/dist/maplibre-gl.js \
      || $viewer/package-lock.json -nt $viewer/node_modules/.package-lock.json ]]; then
  echo "[setup] npm ci (MapLibre GL for the viewer)"
  (cd $viewer && npm ci --no-audit --no-fund --silent) &
  npm_pid=$!
fi
wait_npm() { if [[ -n $npm_pid ]]; then wait "$npm_pid"; fi; }

mkvenv .venv requirements/dev.txt &
p1=$!
mkvenv .venv-stacapi requirements/stacapi.txt &
p2=$!
wait $p1 && wait $p2
mkvenv .venv-ministack requirements/ministack.txt &
p3=$!
mkvenv .venv-sam requirements/sam.txt &
p4=$!
mkvenv .venv-lint requirements/lint.txt &
p5=$!
wait $p3 && wait $p4 && wait $p5
# the project itself, editable, in its venv (again when a compiled kernel, the median's or the
# warp's, is missing or older than its source: pip install -e . builds them in place)
stale=0
for k in _median _warp _blocks; do
  so=$(ls src/cloudfree/$k*.so 2>/dev/null | head -1 || true)
  if ! .venv/bin/python -c "import cloudfree.$k" 2>/dev/null \
     || [[ -z "$so" || src/cloudfree/$k.c -nt "$so" ]]; then stale=1; fi
done
if [[ $stale == 1 ]]; then
  .venv/bin/pip install -q --no-deps -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
# rasterio's GDAL on zlib-ng, as in the Lambda layer (scripts/zlib_ng.py; idempotent: ~1 s when
# done, ~30 s the first time on a machine: it builds zlib-ng once into ~/.cache/cloudfree)
.venv/bin/python scripts/zlib_ng.py "$(.venv/bin/python -c \
  'import sysconfig; print(sysconfig.get_paths()["purelib"])')" | { grep -v "^WARNING: Location" || true; }
# the project's own modules, compiled once (timestamp-checked: an edited module is compiled
# again in memory until the next setup)
"$PY" -m compileall -q src/cloudfree >/dev/null || true
wait_npm
echo "[setup] ok"
