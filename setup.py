"""Installs ``bnn``: ``pip install -e .`` (add ``[test]`` for the test suite).

The distribution is named ``bnn-toolkit`` (the name ``bnn`` on PyPI belongs to
another project, binary-networks-pytorch); the import name is ``bnn``.

The packed-inference kernel (``bnn/deploy/csrc``) is plain C built as an
optional extension: when no compiler is available the install still succeeds
and ``bnn`` falls back to its pure-torch path.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Builds C extensions, but never fails the install when one cannot be built."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure is optional
            print(f"bnn: optional C kernel not built ({exc}); using the pure-torch path")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"bnn: optional extension {ext.name} not built ({exc}); using the pure-torch path")


def _kernel_extension():
    """The optional xnor-popcount kernel (plain C + OpenMP, no libtorch)."""
    import sys

    from setuptools import Extension

    if sys.platform == "win32":
        cflags, lflags = ["/O2", "/openmp", "/fp:precise"], []
    else:
        cflags, lflags = ["-O3", "-fopenmp", "-ffp-contract=off", "-std=gnu99"], ["-fopenmp"]
    return Extension(
        "bnn.deploy._kernel",
        sources=["bnn/deploy/csrc/bnn_kernel.c"],
        depends=["bnn/deploy/csrc/bconv_tmpl.h", "bnn/deploy/csrc/ceiling.h", "bnn/deploy/csrc/qconv.h"],
        extra_compile_args=cflags,
        extra_link_args=lflags,
        optional=True,
    )


here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as fh:
    long_description = fh.read()

setup(
    name="bnn-toolkit",  # the import name stays `bnn`; PyPI's `bnn` is another project
    version="0.2.0",
    description="A PyTorch toolkit for binary neural networks: fake binarization, training recipes, 1-bit packed inference",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["bnn", "bnn.*"]),
    package_data={"bnn": ["deploy/csrc/*.c", "deploy/csrc/*.h", "configs/*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "pyyaml>=5.4",
        "iopath>=0.1.9",
        "tqdm>=4.60",
        "numpy>=1.21",
        "matplotlib>=3.5",
    ],
    extras_require={
        "test": ["pytest>=7", "onnx>=1.14", "onnxscript>=0.1", "tensorboard>=2.10"],
        "tensorboard": ["tensorboard>=2.10"],
        # benchmarks: the float model under ONNX Runtime (inference.py), the digits data set (accuracy.py)
        "bench": ["onnxruntime>=1.16", "scikit-learn>=1.0"],
    },
    entry_points={"console_scripts": ["bnn-train=bnn.cli:main", "bnn-eval=bnn.engine.evaluate:main",
                                      "bnn-pack=bnn.deploy.ship:main"]},
    ext_modules=[_kernel_extension()],
    cmdclass={"build_ext": OptionalBuildExt},
)
