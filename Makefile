# rpt-connector — developer entry points. `make demo` and `make test` are the two that matter.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KAFKA  := $(PY) devkafka/devkafka.py

.PHONY: install lint test demo bench bench-quick chaos kafka-up kafka-down clean image-test

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The broker is provisioned from Maven Central; the suite stops whatever it started.
test: $(STAMP)
	bash tools/ensure-prometheus.sh
	$(KAFKA) fetch
	$(PY) -m pytest $(PYTEST_ARGS)

# The image built and run for real (Docker engine started if none answers, base image made with
# debootstrap when no registry serves one), then the compose stack. See tools/image_test.py.
image-test: $(STAMP)
	bash tools/ensure-prometheus.sh
	$(KAFKA) fetch
	$(PY) tools/image_test.py $(IMAGE_TEST_ARGS)

demo: $(STAMP)
	$(KAFKA) fetch
	$(PY) tools/demo.py

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
