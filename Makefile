# cxrq: `make run` serves the API with a worker; `make test` runs the whole suite.
# VENV can point outside the clone (.ci/run reuses one keyed by the requirements' hash).
VENV ?= .venv
PYTHON ?= python3
PORT ?= 8000
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrq-installed
PYTEST_ARGS ?=

.PHONY: install run worker test lint bench loadtest clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# The command-line client (cli/, docs/cli.md), a package of its own: installed as a copy, not
# editable (VENV may be shared by several clones), again whenever its sources change.
CLI_STAMP := $(VENV)/.cxrq-cli-installed
$(CLI_STAMP): $(STAMP) cli/pyproject.toml $(wildcard cli/cxrq_cli/*.py)
	$(PY) -m pip install --quiet --no-build-isolation ./cli 2>/dev/null || $(PY) -m pip install --quiet ./cli
	@touch $(CLI_STAMP)

install: $(STAMP) $(CLI_STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runstack --port $(PORT)

worker: install
	$(PY) -m worker

# The DICOM receiver alone (make run starts one too): C-STORE/C-ECHO on CXRQ_DICOM_PORT (11112).
.PHONY: dicom
dicom: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py run_dicom

# Real peers the tests drive, from Debian, installed here when running as root (elsewhere the tests
# that need one skip and say what to install): Chromium for the browser tests (never a downloaded
# browser), dcmtk (storescu, echoscu) and Orthanc for the DICOM tests, dicom3tools' dciodvfy for
# the SR, and kubectl (kustomize) for the manifests where the machine's apt sources carry it.
TEST_PEERS := /usr/bin/chromium:chromium /usr/bin/storescu:dcmtk /usr/sbin/Orthanc:orthanc /usr/bin/dciodvfy:dicom3tools /usr/bin/kubectl:kubectl
test: install
	@missing=""; for peer in $(TEST_PEERS); do test -x "$${peer%%:*}" || missing="$$missing $${peer##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq; for pkg in $$missing; do DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null 2>&1 || echo "make test: could not install $$pkg; the tests that need it will skip"; done; \
	  else echo "make test: not root, not installing:$$missing; the tests that need them will skip"; fi; \
	fi
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

# Refresh the screenshots in docs/screenshots/ from the browser tests (a plain test run keeps its own).
.PHONY: screenshots
screenshots: install
	CXRQ_SCREENSHOTS=docs $(PY) -m pytest tests/web/test_browser.py tests/dashboard -q -m slow

lint: install
	$(VENV)/bin/ruff check backend worker tools tests loadtest cli
	$(VENV)/bin/ruff format --check backend worker tools tests loadtest cli

# The load test: reference and cxrq, 10 and 20 users, 120 s each, plus the step test.
LOADTEST_ARGS ?= --step
loadtest: install
	$(PY) loadtest/run $(LOADTEST_ARGS)

clean:
	rm -rf var .pytest_cache

# Inference engine (docs/performance.md). bench: reference vs default vs fast, one process,
# last line JSON. tune: sweep batching/threads/workers/concurrency, write worker/runtime/tuned.json.
BENCH_ARGS ?= --out var/bench.json --plot var/bench.png
TUNE_ARGS ?=
.PHONY: tune claim-cost
bench: install
	$(PY) -m tools.bench $(BENCH_ARGS)

tune: install
	$(PY) -m tools.tune $(TUNE_ARGS)

# The batch claim's cost on PostgreSQL with 1,000 and 10,000 jobs queued over 50 clients.
claim-cost: install
	$(PY) -m tools.claim_cost

# Capacity (docs/scaling.md): the shipped claim at 1-64 claimers with 2,000 and 100,000 queued, uploads/s,
# database CPU per job, where it saturates; its own database, dropped afterwards. ~10 min.
CAPACITY_ARGS ?= --out var/capacity.json
.PHONY: capacity
capacity: install
	$(PY) -m tools.capacity $(CAPACITY_ARGS)

# The HTTP edge attacked as issue #14 did, old server and new side by side (docs/operations.md).
.PHONY: edge-probe
edge-probe: install
	$(PY) -m tools.edge_probe --json var/edge-probe.json

# How many long-poll waiters one web process holds, and what they cost (tools/waiter_probe.py).
.PHONY: waiter-probe
waiter-probe: install
	$(PY) -m tools.waiter_probe --json var/waiter-probe.json

# One client floods GET sr.dcm (16 at once, 30 s): health's, another client's and the SR's latency (tools/sr_flood.py).
SR_FLOOD_ARGS ?= --json var/sr-flood.json
.PHONY: sr-flood
sr-flood: install
	$(PY) -m tools.sr_flood $(SR_FLOOD_ARGS)
