# rpt-connector — developer entry points. `make demo` and `make test` are the two that matter.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KAFKA  := $(PY) devkafka/devkafka.py

.PHONY: install lint test demo dashboard-demo bench bench-quick chaos kafka-up kafka-down clean

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

demo: $(STAMP)
	$(KAFKA) fetch
	$(PY) tools/demo.py

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
