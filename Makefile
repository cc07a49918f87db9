# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint candidates review-set benchmarks clean

$(STAMP): constraints.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Gate the shipped candidates on the shipped review set with the strict policy, logging to sqlite:///mlflow.db.
demo: $(STAMP)
	PATH="$(VENV)/bin:$$PATH" bash scripts/demo.sh

# --durations=25: the slowest tests printed on every run, so a test that grows slow shows in CI's log.
test: $(STAMP)
	$(PY) -m pytest -q --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check gate tests benchmarks scripts
	$(VENV)/bin/mypy

# Re-create the shipped review set and candidates exactly (see README, "Where the demo comes from").
review-set: $(STAMP)
	rm -rf review_sets/shapes-v1
	$(VENV)/bin/xgate review-set synth --bias 0.9 --n 600 --seed 20260 --name shapes-v1 -o review_sets/shapes-v1

candidates: $(STAMP)
	PATH="$(VENV)/bin:$$PATH" bash scripts/train_candidates.sh

benchmarks: $(STAMP)
	$(PY) benchmarks/bench_gradcam.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_inputs.py
	$(PY) benchmarks/bench_verdicts.py --stability

clean:
	rm -rf xgate-out .pytest_cache .mypy_cache .ruff_cache
