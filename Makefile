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

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/snakemake --lint --snakefile workflow/Snakefile

bench: venv
	$(BIN)/python benchmarks/extraction.py

clean:
	rm -rf results .snakemake
