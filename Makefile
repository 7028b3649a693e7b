# datadistill: `make demo` (distil and evaluate Fashion-MNIST end to end), `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test lint bench clean

setup: $(VENV)/.installed

# torch is pinned first: a bare `torch` requirement would pull a multi-GB CUDA build on machines
# that keep a CPU wheel locally; any torch >= 2.3 works (see pyproject.toml).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian (package dataset-fashion-mnist); elsewhere, say what to do.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST)/train-images-idx3-ubyte ]; then \
	  echo "Fashion-MNIST found in $(FMNIST)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  sudo apt-get install -y -q dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is not installed and cannot be installed here automatically."; \
	  echo "Either run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or download"; \
	  echo "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and"; \
	  echo "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a"; \
	  echo "folder DIR and run: make demo DATA_ROOT=DIR"; exit 1; \
	fi

DATA_ROOT ?=
DEMO_OUT  ?= runs/demo
# DM at IPC 10 on Fashion-MNIST (fast preset cut to 50 iterations of 128 real images per class),
# then 2+2 networks under the DSA protocol shortened to 80 epochs: the synthetic set vs a random
# real subset. 5 minutes on 2 AVX2 CPU cores, 2 on 2 AVX-512 cores (measured, BENCHMARKS.md).
demo: setup data
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/datadistill distill --dataset fashion-mnist --method dm --ipc 10 --preset fast \
	  --steps 50 --set batch_real=128 --protocol dsa --epochs 80 --num-eval 2 --out $(DEMO_OUT) \
	  $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
