# Everything a newcomer needs: `make demo`, `make test`. Works with only python3, pip and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast test-slow lint typecheck demo bench soak fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# ruff, the import contracts, and mypy (strict for ped/, keys/ and pedtools/: what other
# implementations build on; default strictness for the daemons and the HSM).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

# Both CPUs: pytest-xdist runs one worker per CPU; worksteal evens out the few long
# whole-process tests.  PYTEST_ARGS="-n 0" runs in one process (e.g. with --pdb).
test: lint
	$(BIN)/python -m pytest -m "not slow" -n auto --dist worksteal $(PYTEST_ARGS)

# The inner loop: only the in-memory tests (none marked `process`: no daemon or CLI started
# as a process), under a minute.  `make test` still runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not process" -n auto --dist worksteal $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m pedtools.demo

bench: $(STAMP)
	$(BIN)/python -m pedtools.bench

# Every daemon through many logins (remote PED) and PKCS#11 signs (hsmclient): memory
# and fd growth, log bytes and latency per daemon; exit 1 if one grows.  SOAK_MINUTES sets
# the length (default 2); SOAK_ARGS passes more (e.g. SOAK_ARGS="--operations 20000").
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m pedtools.bench.soak $(SOAK_ARGS)

# Coverage-guided fuzzing of the frame and key-image decoders (not part of `make test`).
# FUZZ_SECONDS sets the time per harness (default 60); the corpus lives in fuzz/corpus/.
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet atheris
	$(BIN)/python fuzz/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
