"""The one compiled part of netkit: the DNS cache's hit and miss paths (dnscache/_fastpath.c, _upstream.c), built by
the normal ``pip install`` of the project; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dnscache._fastpath",
            ["dnscache/_fastpath.c"],
            depends=["dnscache/_upstream.c"],  # included by _fastpath.c: one translation unit
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
