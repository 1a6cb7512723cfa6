"""The Lambda layer ships only what the Lambdas import, and everything they import.

GIVEN the layer as ``sam build`` makes it (layers/cloudfree/Makefile, cached build),
THEN the developer tooling (synth, local, pipeline, the CLI) is absent, and
WHEN every handler (functions/*/app.py) and every module shipped in the layer is imported in a
fresh interpreter whose path holds only the function folder, the layer, the standard library and
boto3 (what the Lambda runtime provides), THEN all imports resolve there, including the imports
made lazily inside functions (found by reading each module's source).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAM = REPO / ".venv-sam" / "bin" / "sam"
DEV_ONLY = ("synth", "local", "pipeline", "viewer", "cli.py", "catalog_search.py", "progress.py")
#: What the python3.11 Lambda runtime provides besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")

needs_sam = pytest.mark.skipif(not SAM.exists(), reason="no .venv-sam")

PROBE = r'''
import ast, importlib, importlib.util, json, pkgutil, sys
layer, functions = sys.argv[1], sys.argv[2:]
report = {"handlers": {}, "modules": [], "unresolved": [], "outside": []}
for fn in functions:
    sys.path.insert(0, fn)
    spec = importlib.util.spec_from_file_location(f"app_{len(report['handlers'])}", fn + "/app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report["handlers"][fn] = callable(getattr(mod, "lambda_handler", None))
    sys.path.remove(fn)
import cloudfree
for info in pkgutil.walk_packages(cloudfree.__path__, "cloudfree."):
    mod = importlib.import_module(info.name)
    report["modules"].append(info.name)
    if not mod.__file__.endswith(".py"):  # a compiled extension (the median kernel)
        continue
    src = open(mod.__file__).read()
    pkg = info.name if info.ispkg else info.name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(src)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            parent = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
            if node.module:
                names = [f"{parent}.{node.module}"]
            else:  # from . import x: a submodule, or a name of the package
                names = [f"{parent}.{a.name}" for a in node.names
                         if not hasattr(importlib.import_module(parent), a.name)]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        for name in names:
            try:
                found = importlib.util.find_spec(name)
            except ModuleNotFoundError:
                found = None
            if found is None:
                report["unresolved"].append(f"{info.name}: {name}")
allowed = tuple(sys.argv[1:2]) + (sys.prefix, sys.base_prefix)
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if f and not f.startswith(allowed) and "/runtime-packages/" not in f and "/functions/" not in f:
        report["outside"].append(f"{name}: {f}")
print(json.dumps(report))
'''


@pytest.fixture(scope="module")
def layer() -> Path:
    if not SAM.exists():
        pytest.skip("no .venv-sam")
    from cloudfree.pipeline.deploy import build

    build(REPO)  # cached: rebuilds only when template/functions/layers/src changed
    site = REPO / ".aws-sam" / "build" / "CloudfreeLayer" / "python"
    assert (site / "cloudfree" / "__init__.py").exists()
    return site


@needs_sam
def test_dev_tooling_stays_out_of_the_layer(layer):
    shipped = {p.name for p in (layer / "cloudfree").iterdir()}
    for name in DEV_ONLY:
        assert name not in shipped, f"{name} is developer tooling: keep it out of the layer"
    # what the Lambdas do need is there (stac validation reads the packaged schemas)
    assert {"tasks.py", "storage.py", "layout.py", "events.py", "schemas"} <= shipped
    assert (layer / "cloudfree" / "schemas" / "schemas.stacspec.org").is_dir()


def _layer_only(layer: Path, tmp_path: Path, probe: str, *args: str):
    """Run ``probe`` in a fresh interpreter whose path holds only the layer, the packages the
    Lambda runtime provides (symlinked from this venv) and the standard library."""
    runtime = tmp_path / "runtime-packages"
    runtime.mkdir()
    venv_site = Path(sysconfig.get_paths()["purelib"])
    for pkg in RUNTIME_PACKAGES:
        src = venv_site / pkg if (venv_site / pkg).is_dir() else venv_site / f"{pkg}.py"
        (runtime / src.name).symlink_to(src)
    stdlib = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
              str(Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload")]
    path = [str(layer), str(runtime), *stdlib]
    code = f"import sys; sys.path[:] = {path!r}\n" + probe
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(tmp_path),
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "cloudfree",
           "POWERTOOLS_METRICS_NAMESPACE": "Cloudfree"}
    return subprocess.run([sys.executable, "-B", "-I", "-S", "-c", code, *args],
                          capture_output=True, text=True, env=env, timeout=300)


@needs_sam
def test_every_handler_imports_from_the_layer_alone(layer, tmp_path):
    functions = sorted(str(p.parent) for p in (REPO / "functions").glob("*/app.py"))
    assert len(functions) == 10
    res = _layer_only(layer, tmp_path, PROBE, str(layer), *functions)
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(report["handlers"].values()) and len(report["handlers"]) == 10
    assert {"cloudfree.tasks", "cloudfree.publish", "cloudfree.median"} <= set(report["modules"])
    assert not [m for m in report["modules"] if m.split(".")[1] in ("synth", "local", "pipeline")]
    assert report["unresolved"] == [], f"imports missing from the layer: {report['unresolved']}"
    assert report["outside"] == [], "modules loaded from outside the layer and the runtime"


WINDOW_PROBE = r'''
import sys, numpy as np, rasterio
from cloudfree.bands import get_band
from cloudfree.composite import WINDOW_COMPRESSION, WindowResult, write_window_result
from cloudfree.windows import Window
band, window = get_band("blue"), Window(0, 0, 512, 512)
median = (np.arange(512 * 512, dtype=np.uint16) % 4000 + 1).reshape(512, 512)
count = np.full((512, 512), 7, np.uint8)
res = WindowResult("blue", window, median, count, {"a": 1}, {"a": 0}, 512 * 512)
write_window_result(res, sys.argv[1], "33UUP", band)
with rasterio.open(sys.argv[1]) as src:
    ok = (src.compression.value == WINDOW_COMPRESSION["compress"]
          and (src.read(1) == median).all() and (src.read(2) == 7).all())
print("ok" if ok else f"bad {src.compression}")
'''


@needs_sam
def test_the_layers_rasterio_writes_and_reads_the_window_compression(layer, tmp_path):
    """The window GeoTIFFs are ZSTD (``composite.WINDOW_COMPRESSION``): the layer's own
    rasterio/GDAL (not this venv's) writes one and reads the same pixels back."""
    res = _layer_only(layer, tmp_path, WINDOW_PROBE, str(tmp_path / "w.tif"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "ok"


CODEC_AND_COST_PROBE = r'''
import sys, numpy as np, rasterio
from cloudfree.costs import tile_cost
from cloudfree.assemble import write_web_cog
print(round(tile_cost("", 16, 3008, compression="LERC_ZSTD").gb_s, 1))
src = sys.argv[1] + "/in.tif"
with rasterio.open(src, "w", driver="GTiff", width=600, height=600, count=1, dtype="uint16",
                   crs="EPSG:32633", transform=(10, 0, 300000, 0, -10, 5400000), nodata=0) as d:
    d.write((np.arange(600 * 600, dtype=np.uint16) % 3000 + 1).reshape(1, 600, 600))
for profile in ("deflate", "lerc_zstd"):
    info = write_web_cog(src, sys.argv[1] + f"/{profile}.tif", indexes=[1], profile=profile)
    with rasterio.open(info.href) as cog:
        print(profile, cog.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"], int(cog.read(1).sum()))
'''


@needs_sam
def test_the_layer_plans_a_tile_and_writes_both_cog_compressions(layer, tmp_path):
    """What the complete step (``tasks.tile_cost``: cloudfree plan's projection beside the
    measured cost) and the assemble step (``CogCompression``) need runs from the layer alone:
    costs and its calibration data; LERC_ZSTD (GDAL's LERC and zstd) writing the same
    pixels as DEFLATE."""
    from cloudfree.costs import tile_cost

    res = _layer_only(layer, tmp_path, CODEC_AND_COST_PROBE, str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert float(lines[0]) == round(tile_cost("", 16, 3008, compression="LERC_ZSTD").gb_s, 1)
    deflate, lerc = lines[1].split(), lines[2].split()
    assert (deflate[1], lerc[1]) == ("DEFLATE", "LERC_ZSTD") and deflate[2] == lerc[2]


BYTECODE_PROBE = r'''
import importlib.util, json, sys
from importlib._bootstrap_external import SourceLoader
compiled = []
_source_to_code = SourceLoader.source_to_code
def _record(self, data, path, *args, **kwargs):
    compiled.append(str(path))
    return _source_to_code(self, data, path, *args, **kwargs)
SourceLoader.source_to_code = _record
for i, fn in enumerate(sys.argv[2:]):
    sys.path.insert(0, fn)
    spec = importlib.util.spec_from_file_location(f"app_{i}", fn + "/app.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    sys.path.remove(fn)
print(json.dumps([p for p in compiled if p.startswith(sys.argv[1])]))
'''


@needs_sam
def test_the_layer_ships_bytecode_so_a_cold_start_compiles_nothing(layer, tmp_path):
    """/opt is read-only on Lambda: a module without a valid .pyc is compiled on every cold start
    (0.5 s of the median handler's 1.2-1.5 s import here). Every module of the layer has one,
    hash-based and unchecked (PEP 552 flags 0b01: valid whatever the zip does to timestamps),
    of the layer's Python; importing every handler compiles nothing from the layer (the runtime's
    own boto3 is AWS's business)."""
    tag = sys.implementation.cache_tag  # cpython-311: the layer's PYTHON and the runtime's
    sources = [p for p in layer.rglob("*.py")]
    assert len(sources) > 500
    missing, checked = [], []
    for src in sources:
        pyc = src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc"
        if not pyc.exists():
            missing.append(str(src.relative_to(layer)))
            continue
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        if flags != 0b01:
            checked.append(str(src.relative_to(layer)))
    # a file compileall cannot compile (none today) would be listed here, with the reason
    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:5]}"
    assert checked == [], f"timestamp- or checked-hash bytecode: {checked[:5]}"
    functions = sorted(str(p.parent) for p in (REPO / "functions").glob("*/app.py"))
    res = _layer_only(layer, tmp_path, BYTECODE_PROBE, str(layer), *functions)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


ZLIB_PROBE = r'''
import json, os, sys
from cloudfree.deflate import gdal_zlib
import rasterio, numpy as np
from rasterio.io import MemoryFile
data = (np.arange(256 * 256, dtype=np.uint16) % 977).reshape(256, 256)
with MemoryFile() as mem:
    with mem.open(driver="GTiff", width=256, height=256, count=1, dtype="uint16",
                  compress="DEFLATE", zlevel=2, predictor=2, tiled=True) as dst:
        dst.write(data, 1)
    with mem.open() as src:
        same = bool((src.read(1) == data).all())
found = gdal_zlib()
print(json.dumps({"version": found["version"], "path": found["path"], "same": same}))
'''


@needs_sam
def test_the_layers_gdal_runs_zlib_ng_built_for_amazon_linux_2(layer, tmp_path):
    """The layer carries zlib-ng (``scripts/zlib_ng.py``) and its GDAL binds it: no library of
    the layer's rasterio NEEDs the system ``libz.so.1``; the library needs no glibc newer than
    AL2's 2.26; in a layer-only interpreter GDAL writes and reads DEFLATE through it."""
    sys.path.insert(0, str(REPO / "scripts"))
    import check_glibc
    import zlib_ng

    lib = layer / "rasterio.libs" / zlib_ng.LIBNAME
    assert lib.exists()
    patchelf = zlib_ng.find_patchelf(None)
    files = [f.name for f in zlib_ng._elf_files(layer)
             if zlib_ng.LIBNAME in zlib_ng.needed(patchelf, f)]
    assert any(f.startswith("libgdal") for f in files) and any(f.startswith("libtiff")
                                                                 for f in files)
    assert not [f.name for f in zlib_ng._elf_files(layer)
                if zlib_ng.SYSTEM_ZLIB in zlib_ng.needed(patchelf, f)]
    assert check_glibc.too_new(check_glibc.glibc_versions(str(lib)), (2, 26)) == {}
    res = _layer_only(layer, tmp_path, ZLIB_PROBE)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["version"].endswith(".zlib-ng") and got["same"]
    assert Path(got["path"]).resolve() == lib.resolve()
