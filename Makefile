# Visualizing and Understanding CNNs -- every set-up step lives here.
#
#   make lab    set up (venv, dependencies, data) and open the course in JupyterLab
#   make test   set up, then run every test, including every notebook (fast mode)
#   make book   set up, then run every notebook with its real settings and render HTML to build/
#
# Data comes from ../shared/data when that local mirror exists (COURSE_DATA_MIRROR),
# otherwise from the internet; either way every file is checked against its sha256.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MIRROR := $(wildcard $(abspath ../shared/data))
export COURSE_DATA_MIRROR ?= $(MIRROR)
export MPLBACKEND ?= Agg

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: lab test book setup data clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

data: setup
	$(BIN)/python -m course_lib.data fetch

lab: data
	$(BIN)/jupyter lab notebooks/00_introduction.ipynb

test: data
	COURSE_FAST=1 $(BIN)/python -m pytest -q tests notebooks --nbval-lax --nbval-current-env

book: data
	mkdir -p build
	$(BIN)/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=-1 --output-dir build $(NOTEBOOKS)

clean:
	rm -rf build $(VENV)
