# rpt-connector — developer entry points. `make demo` and `make test` are the two that matter.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KAFKA  := $(PY) devkafka/devkafka.py

.PHONY: install lint test fuzz demo dashboard-demo native bench bench-quick chaos kafka-up kafka-down clean image-test

# The native hot path (native/, Rust + PyO3) is built by pip through maturin (from PyPI) with
# cargo from $(CARGO_HOME)/bin or PATH. If it does not build, the connector runs the
# pure-Python path and logs that once at start; `make native` retries.
CARGO_HOME ?= $(HOME)/.cargo
NATIVE_SRC := native/Cargo.toml native/pyproject.toml $(wildcard native/src/*.rs)
NATIVE_BUILD = PATH="$(CARGO_HOME)/bin:$$PATH" $(PY) -m pip install --quiet ./native \
	|| echo "*** rpt_native did not build: the connector will run the pure-Python path ***"

$(STAMP): pyproject.toml constraints.txt $(NATIVE_SRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(NATIVE_BUILD)
	touch $(STAMP)

install: $(STAMP)

.PHONY: native
native: $(STAMP)
	$(NATIVE_BUILD)

# lint-imports: the import contracts in pyproject.toml [tool.importlinter] (the layers of connector/).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The broker is provisioned from Maven Central; the suite stops whatever it started.
# Hypothesis runs derandomized here (profile `ci`, tests/conftest.py): the same examples on
# every run and machine. Random exploration is `make fuzz`. A broken import contract fails it first.
HYPOTHESIS_PROFILE ?= ci
test: $(STAMP)
	$(VENV)/bin/lint-imports
	bash tools/ensure-prometheus.sh
	$(KAFKA) fetch
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest $(PYTEST_ARGS)

# Every hypothesis test under FUZZ_PATHS (all in-process), random draws, FUZZ_EXAMPLES each.
FUZZ_EXAMPLES ?= 5000
FUZZ_PATHS    ?= tests/unit
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz HYPOTHESIS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  $(PY) -m pytest -m hypothesis --timeout 0 --hypothesis-show-statistics $(FUZZ_PATHS) $(PYTEST_ARGS)

# The image built and run for real (Docker engine started if none answers, base image made with
# debootstrap when no registry serves one), then the compose stack. See tools/image_test.py.
image-test: $(STAMP)
	bash tools/ensure-prometheus.sh
	$(KAFKA) fetch
	$(PY) tools/image_test.py $(IMAGE_TEST_ARGS)

demo: $(STAMP)
	$(KAFKA) fetch
	$(PY) tools/demo.py $(ARGS)

# A few minutes of the demo with a Kafka outage and a bad token under a real Prometheus,
# drawn as the Grafana dashboard into docs/dashboard/ (contact-sheet.png, summary.json, panels/).
dashboard-demo: $(STAMP)
	bash tools/ensure-prometheus.sh
	$(KAFKA) fetch
	$(PY) tools/dashboard_demo.py $(DASHBOARD_ARGS)

bench: $(STAMP)
	$(KAFKA) fetch
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(KAFKA) fetch
	$(PY) bench/run.py --quick $(BENCH_ARGS)

chaos: $(STAMP)
	$(KAFKA) fetch
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

kafka-up: $(STAMP)
	$(KAFKA) up

kafka-down: $(STAMP)
	$(KAFKA) down

clean:
	-$(KAFKA) down
	rm -rf .cache/kafka/*/data .pytest_cache
