# Two commands set everything up on a fresh machine (Python >= 3.9 and make are all it needs):
#   make demo   - create .venv, install, run the quick prototype on the embedded synthetic data
#   make test   - create .venv, install, run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= all,dev
comma := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py constraints.txt
	$(BIN)/python -m pip install --upgrade --quiet "pip>=23" "setuptools>=68" wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/xrayprototype demo

test: install
	$(BIN)/python -m pytest tests -n 2 --dist loadfile --durations=25

benchmark: install
	$(BIN)/python benchmarks/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
