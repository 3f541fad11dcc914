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
	$(BIN)/medfilip query "select run, rsna_auc, nih_auc, vinbig_auc, siim_auc, covid_auc, downstream_mean_auc, mean_auc from read_csv_auto('results/tables/zeroshot.csv')"

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
	$(BIN)/python benchmarks/segmentation.py

clean:
	rm -rf results .snakemake
