# make demo  - set up .venv (if missing) and run the pipeline on the embedded default
# make test  - set up .venv (if missing) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: demo test venv lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(BIN)/snakemake --cores $(CORES) --snakefile workflow/Snakefile all
	$(BIN)/medfilip query "select category, count(*) as n from entities where polarity = 'present' group by 1 order by 2 desc limit 10"
	$(BIN)/medfilip query "select category, precision, recall, f1 from read_csv_auto('results/tables/extraction_quality.csv') where category like '%average'"
	$(BIN)/medfilip query "select run, rsna_acc, rsna_f1, rsna_auc, nih_auc, vinbig_auc, siim_auc, covid_auc, covid_mismatched_auc, downstream_mean_acc, downstream_mean_f1, downstream_mean_auc, downstream_mean_auc_low, downstream_mean_auc_high, mean_auc from read_csv_auto('results/tables/zeroshot.csv')"
	$(BIN)/medfilip query "select run, prompt, direction, n_images, p_at_1, p_at_5, p_at_10, r_at_10 from read_csv_auto('results/tables/retrieval.csv') where relevance = 'category' order by prompt, direction, run"

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/snakemake --lint --snakefile workflow/Snakefile

bench: venv
	$(BIN)/python benchmarks/extraction.py
	$(BIN)/python benchmarks/phantom.py
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/ssm.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/zeroshot_threshold.py
	$(BIN)/python benchmarks/zeroshot_bootstrap.py

clean:
	rm -rf results .snakemake
