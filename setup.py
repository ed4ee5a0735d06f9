"""Build hook for the one compiled module, ``service._hotpath`` (everything else is in pyproject.toml).

The module is optional: without a C compiler the build goes on and ``service.audio.resample`` uses
its numpy reference implementation (same output, bit for bit; slower). ``.ci/bootstrap`` installs
gcc and the Python headers, and CI fails if the module is missing (tests/unit/test_hotpath.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "service._hotpath",
            sources=["service/_hotpath.c"],
            extra_compile_args=["-O3", "-fno-fast-math", "-std=c11"],
            optional=True,
        )
    ]
)
