# cloudfree — the commands a newcomer needs. `make demo` runs the pipeline locally, `make test` tests it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLOUDFREE := $(VENV)/bin/cloudfree
PYTEST_ARGS ?=

.PHONY: help setup up down status env demo demo-desert view test test-heavy test-unit test-integration bench bench-memory bench-peer bench-codecs plan quality lint asl build deploy clean

help:
	@echo "make demo   - install, start the local stack, synthesize an archive, deploy, run a year"
	@echo "make demo-desert - the same on a bright desert tile: offset decisions vs truth"
	@echo "make test   - install, start the local stack, run every test"
	@echo "make view   - the published composites on a map (http://127.0.0.1:8765/)"
	@echo "make up / make down / make status - the local stack (MiniStack + STAC API)"
	@echo "make bench  - benchmarks (median kernel vs np.nanmedian, outlier decision, full tile vs codec floor)"
	@echo "make bench-peer - cloudfree composite vs odc-stac + dask on the same scenes (3 rounds)"
	@echo "make bench-codecs - the published COGs' compressions: DEFLATE vs LERC_ZSTD (CPU, bytes, real pixels)"
	@echo "make bench-memory - the full tile at 2048-3538 MB under Lambda's CPU share (cgroup quota; root; ~25 min)"
	@echo "make plan   - what a world-year costs on AWS (cloudfree plan --world --offline)"
	@echo "make quality - composite quality vs the synthetic truth: plain median vs outlier rejection"
	@echo "make lint   - ruff, sam validate --lint, cfn-lint, checkov, Retry blocks up to date"
	@echo "make asl    - render the state machine's Retry/TimeoutSeconds from cloudfree.retry"

setup:
	@bash scripts/setup.sh

up: setup
	@$(CLOUDFREE) local up

down:
	@if [ -x $(CLOUDFREE) ]; then $(CLOUDFREE) local down; fi

status:
	@$(CLOUDFREE) local status

env:
	@$(CLOUDFREE) local env

demo: up
	@$(CLOUDFREE) demo

demo-desert: up
	@$(CLOUDFREE) demo --landscape desert

# the map viewer on the local stack's published outputs (Ctrl-C stops it); VIEW_PORT=0: any port
VIEW_PORT ?= 8765
view: up
	@eval "$$($(CLOUDFREE) local env)" && $(CLOUDFREE) view --port $(VIEW_PORT)

# make test: unit + realdata tests on TEST_WORKERS processes (pytest-xdist, one file per worker at
# a time; `sam build` is serialized by a lock), then the integration tests in order on the stack
# (their 25 slowest printed: CI must stay under 30 minutes on 2 cores).
# PYTEST_ARGS=...: one plain pytest run with those arguments instead.
TEST_WORKERS ?= 2
test: up
ifeq ($(strip $(PYTEST_ARGS)),)
	$(PY) -m pytest -m "not integration" -n $(TEST_WORKERS) --dist loadfile
	$(PY) -m pytest -m integration --durations=25
else
	$(PY) -m pytest $(PYTEST_ARGS)
endif

test-unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# the heavy tests (a full 10980² tile through cloudfree composite): minutes each
test-heavy: up
	CLOUDFREE_HEAVY=1 $(PY) -m pytest -m heavy $(PYTEST_ARGS)

test-integration: up
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# bench: the median kernel against np.nanmedian, the outlier decision on a quarter of a decide
# square (16 x 768², against the frozen old implementation, ~15 s), window reads, then one full 10980² tile (16
# scenes; one band per resolution by default: BENCH_TILE_ARGS=--full for all 13 outputs).
BENCH_TILE_ARGS ?=
bench: setup
	$(PY) bench/bench_median.py
	$(PY) bench/bench_reject.py
	$(PY) bench/bench_tile.py
	$(PY) bench/bench_fulltile.py $(BENCH_TILE_ARGS)

# the full tile at 2048-3538 MB, each under Lambda's CPU share (a cgroup CPU quota; needs root):
# plan_calibration.json's memory_seconds (about 25 min)
bench-memory: setup
	$(PY) bench/bench_memory.py

# the published COGs' compressions (template CogCompression): the encoding CPU of a full blue
# COG (bench_fulltile's windows, made first when missing) and bytes on real Sentinel-2 pixels;
# prints plan_calibration.json's codecs entry (a few minutes)
bench-codecs: setup
	$(PY) bench/bench_codecs.py

# cloudfree composite against odc-stac + dask (../shared/peer, in its own venv: its pins differ
# from ours) on the same 16 generated scenes, 3 alternating rounds, the codec floor measured in
# the same run; prints the three ratios. Not part of CI.
PEER_DIR ?= ../shared/peer
BENCH_PEER_ARGS ?=
bench-peer: setup
	@want=$$(sha1sum $(PEER_DIR)/requirements.txt | cut -c1-40); \
	if [ "$$(cat .venv-peer/.req.sha 2>/dev/null)" != "$$want" ]; then \
	  echo "[bench-peer] building .venv-peer from $(PEER_DIR)/requirements.txt"; \
	  python3 -m venv .venv-peer && .venv-peer/bin/pip install -q -r $(PEER_DIR)/requirements.txt \
	    && echo "$$want" > .venv-peer/.req.sha; \
	fi
	PEER_DIR=$(PEER_DIR) $(PY) bench/bench_peer.py $(BENCH_PEER_ARGS)

# what one year of the world costs on AWS, from the calibration (seconds, no network)
PLAN_YEAR ?= 2023
plan: setup
	$(CLOUDFREE) plan --world --year $(PLAN_YEAR) --offline

# quality: plain median vs robust composite against the synthetic truth (issue 8): six
# scenarios x 3-5 small AOIs on local files, no stack; archives cached in $(QUALITY_DIR).
QUALITY_DIR ?= /tmp/cloudfree-quality
QUALITY_ARGS ?=
quality: setup
	QUALITY_DIR=$(QUALITY_DIR) $(PY) bench/quality.py $(QUALITY_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests functions bench
	$(PY) -m cloudfree.retry --check statemachine/composite.asl.json
	.venv-sam/bin/sam validate --lint --region us-west-2
	.venv-sam/bin/cfn-lint template.yaml
	BC_SKIP_MAPPING=TRUE .venv-lint/bin/checkov -f template.yaml --framework cloudformation \
	    --compact --quiet --skip-download

asl: setup
	$(PY) -m cloudfree.retry statemachine/composite.asl.json

clean: down
	rm -rf .run .aws-sam out
