"""Build hook for the compiled median kernel; all metadata lives in pyproject.toml.

``cloudfree._median`` is optional: without a C compiler the install still succeeds and
``cloudfree.median.masked_median`` falls back to its numpy network. It uses the limited
C API (one ``abi3`` binary for CPython 3.11+) and no numpy headers. The Lambda layer builds
the same source with ``layers/cloudfree/Makefile``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cloudfree._median",
            sources=["src/cloudfree/_median.c"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            extra_compile_args=["-O3", "-std=c99", "-fno-strict-aliasing"],
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
