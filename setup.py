"""Build hook for the compiled plane-XOR kernel; everything else is in pyproject.toml.

The extension is optional: without a C compiler the package installs and runs on its
numpy fallback (slower; ``tessera.core.bitslice.KERNEL`` is None then).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tessera.core._xor",
            ["src/tessera/core/_xor.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
