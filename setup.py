"""Build hook for the compiled kernels; all metadata lives in pyproject.toml.

Both are optional: without a C compiler the install still succeeds, ``cloudfree._median`` is
replaced by ``cloudfree.median``'s numpy network and ``cloudfree._warp`` by GDAL's warper
(``cloudfree.assemble``). They use the limited C API (one ``abi3`` binary for CPython 3.11+)
and no numpy headers. The Lambda layer builds the same sources with
``layers/cloudfree/Makefile``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"cloudfree.{name}",
            sources=[f"src/cloudfree/{name}.c"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            extra_compile_args=["-O3", "-std=c99", "-fno-strict-aliasing"],
            optional=True,
        )
        for name in ("_median", "_warp", "_blocks")
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
