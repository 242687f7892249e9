"""Build of the ``fastworker._native`` extension.

Build modes are chosen by environment variables, so CI and developers can
switch them without editing files:

- ``FASTWORKER_DEBUG=1``: no optimisation, assertions on, debug symbols.
- ``FASTWORKER_SANITIZE=address`` (or ``undefined``): build with that sanitizer.
"""
import os

from setuptools import Extension, setup

SOURCES = ["native/module.c", "native/ring.c", "native/arena.c", "native/wake.c", "native/segment.c"]

extra_compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
extra_link_args = []
define_macros = []

if os.environ.get("FASTWORKER_DEBUG"):
    extra_compile_args += ["-O0", "-g3", "-UNDEBUG"]
else:
    extra_compile_args += ["-O2"]
    define_macros.append(("NDEBUG", "1"))

sanitizer = os.environ.get("FASTWORKER_SANITIZE")
if sanitizer:
    extra_compile_args += [f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer"]
    extra_link_args += [f"-fsanitize={sanitizer}"]

setup(
    ext_modules=[
        Extension(
            "fastworker._native",
            sources=SOURCES,
            depends=["native/layout.h", "native/ring.h", "native/arena.h", "native/wake.h", "native/segment.h"],
            include_dirs=["native"],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            libraries=["pthread"],
        )
    ]
)
