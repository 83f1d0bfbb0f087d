# make demo: set up, then run the main job end to end on the generated CPU checkpoint.
# make test: set up, then lint and run the whole test suite (a real vLLM server on CPU included).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint unit bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/vidchat demo

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only: no engine process (seconds).
unit: setup
	$(PY) -m pytest -m "not engine" $(PYTEST_ARGS)

# The 20 s clips only (~5 minutes); bench-sampling adds the long videos and writes the docs.
bench: setup
	@status=0; $(PY) bench/sampling.py --check --no-long || status=1; \
	$(PY) bench/sampling_modes.py --check || status=1; exit $$status

# Frame sampling against the seed's sampler, then the sampling modes (bench/sampling_modes.py
# replaces only its own section): regenerates docs/sampling.md (~15-30 minutes on 2 busy
# cores: the seed's sampler decodes every frame of two 20-minute clips; clips are cached in
# .cache/bench/ after the first run).
.PHONY: bench-sampling
bench-sampling: setup
	@status=0; $(PY) bench/sampling.py --check --write-docs || status=1; \
	$(PY) bench/sampling_modes.py --check --write-docs || status=1; \
	$(PY) bench/sampling_concurrency.py --write-docs || status=1; exit $$status

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache out

# Throughput against the seed pipeline and a naive vLLM client: regenerates docs/benchmarks.md
# (~10 minutes on 2 cores). bench-tune re-measures the CPU profile variants it cites.
.PHONY: bench-throughput bench-tune
bench-throughput: setup
	$(PY) bench/throughput.py --write-docs

bench-tune: setup
	$(PY) bench/tune_cpu.py --write-docs
