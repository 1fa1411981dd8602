"""Build of geoserver's compiled core (geoserver._core, C++ via pybind11: the point index and the
fast path for whole commands); everything else about the package is declared in pyproject.toml.
`pip install .` and `pip install -e .` compile it.

GEOSERVER_CORE_CFLAGS adds compiler flags (bench/sanitize_core.sh builds its own copy instead)."""

import os

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

FLAGS = ["-O3", "-ffp-contract=off", "-fvisibility=hidden",
         *os.environ.get("GEOSERVER_CORE_CFLAGS", "").split()]

setup(
    ext_modules=[Pybind11Extension("geoserver._core", ["src/core/pointgrid.cpp", "src/core/fastpath.cpp"],
                                   depends=["src/core/pointgrid.hpp"], cxx_std=17,
                                   extra_compile_args=FLAGS)],
    cmdclass={"build_ext": build_ext},
)
