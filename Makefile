# Every target installs what it needs into .venv first (Python 3.11 and gcc on PATH).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rsi-installed
STATE ?= rsi_state.json
# Exact versions come from constraints.txt (make constraints refreshes it).
DEPS := hatchling editables jinja2 libcst black mypy cython pydantic numpy scipy watchdog rich \
        matplotlib pytest pytest-xdist hypothesis ruff ray nuitka

.PHONY: constraints install demo test lint typecheck rebuild status rollback bench clean watch

install: $(STAMP)

$(STAMP): pyproject.toml hatch_build.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt $(DEPS)
	# Editable install: the build hook renders and compiles the shipped state once.
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# Two passes: the suite spread over 2 workers (one test file per worker at a time, so
# module-scoped builds are made once), then the tests that time wall-clock windows or GIL
# hand-offs alone (marked serial in tests/conftest.py), so the other worker cannot skew them.
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q -m serial

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

rebuild: $(STAMP)
	$(BIN)/rsi build --state $(STATE)

status: $(STAMP)
	$(BIN)/rsi status --state $(STATE)

rollback: $(STAMP)
	$(BIN)/rsi rollback --state $(STATE)

# Serve the state and follow its edits (and the templates'): gate, swap or roll back.
watch: $(STAMP)
	$(BIN)/rsi watch --state $(STATE)

bench: $(STAMP)
	$(BIN)/python tools/bench_build.py

clean:
	find generated -mindepth 1 -maxdepth 1 ! -name __init__.py -exec rm -rf {} +
	rm -rf .rsi .demo dist build .pytest_cache .mypy_cache .ruff_cache rsi_state.json.lock

# Newest releases of DEPS into a scratch venv, written back as exact pins.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q $(DEPS)
	{ head -2 constraints.txt; .venv-constraints/bin/python -m pip freeze | sort -f; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-constraints
