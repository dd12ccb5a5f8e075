# Visualizing and Understanding CNNs -- every set-up step lives here.
#
#   make lab    set up (venv, dependencies, data) and open the course in JupyterLab
#   make test   set up, then run every test, including every notebook in JupyterLab in Chromium (fast mode)
#   make test-models  every notebook under nbval with the course model, resnet18 and vgg16 (random weights,
#                     smoke setting; CI runs it too)
#   make test-isa     the numerically sensitive tests with PyTorch limited to the lowest instruction set
#   make book   set up, then run every notebook with its real settings and build the course website
#               into build/site/ (open build/site/index.html)
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

.PHONY: lab test test-models test-isa book setup data clean book-setup chromium

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt requirements-test-nodeps.txt pyproject.toml course_lib/headless.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-test-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(call without-rfc3987-syntax,$(VENV))
	$(BIN)/python -m course_lib.headless   # nbconvert/jupyter execute: no lost replies (jupyter/nbclient#312)
	touch $@

data: setup
	$(BIN)/python -m course_lib.data fetch

lab: data
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) notebooks/00_introduction.ipynb

test: data grader-setup book-setup chromium
	COURSE_FAST=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

# every notebook run by nbval, cell by cell, in its smoke setting (COURSE_FAST=smoke), with the course
# model and with resnet18 and vgg16 (random weights in build/nbval/torch_home): copies with the
# parameters cell's MODEL_NAME line edited as a student would (tools/switch_model.py); CI runs it too
NBVAL_MODELS ?= course resnet18 vgg16
test-models: data
	rm -rf build/nbval
	$(BIN)/python tools/switch_model.py build/nbval $(NBVAL_MODELS)
	COURSE_FAST=smoke COURSE_CACHE=0 TORCH_HOME=$(CURDIR)/build/nbval/torch_home OMP_NUM_THREADS=1 \
	  $(BIN)/python -m pytest -q -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=300 $(PYTEST_ARGS) \
	  $(foreach m,$(NBVAL_MODELS),build/nbval/$(m))

# the numerically sensitive tests again with PyTorch limited to the lowest instruction sets (no AVX2,
# no AVX-512, no AMX: plain C++ kernels, oneDNN at SSE4.1) and no bf16 units: what a student's older
# laptop computes. The whole suite that way: ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 COURSE_CPU_BF16=0 make test
ISA_ENV   ?= ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 COURSE_CPU_BF16=0
ISA_TESTS ?= tests/test_cam.py tests/test_saliency.py tests/test_occlusion.py tests/test_patches.py \
             tests/test_style.py tests/test_optimize.py tests/test_fast_style.py tests/test_timing.py \
             tests/test_neighbors.py tests/test_models.py tests/test_texture.py
# Less the slow tests of a property (fooled or not, a score raised, an accuracy or a distance above a bar, with a
# margin no rounding reaches) rather than a close comparison: each takes 10-60 s with plain C++ kernels. And the
# course model's occlusion-vs-captum comparison is made once (30-12-black-logit; its other settings run on the
# tiny net). 3:20 -> 1:55 on the idle AMD EPYC (1:59 in CI), every oracle comparison kept.
ISA_SKIP  ?= not test_universal_perturbation_fools_more_than_noise and not test_attacks_stay_within_budget \
             and not test_course_model_accuracy_on_a_fixed_val_subset and not test_each_regulariser_acts_in_its_direction \
             and not test_class_visualization_raises_the_class_score and not test_features_beat_pixels_on_the_course_model \
             and not test_every_shipped_network_paints_its_style \
             and not test_minimum_perturbation_reaches_the_target_with_a_small_change
ISA_DESELECT ?= tests/test_occlusion.py::test_matches_captum_on_course_model[16-8-mean-prob] \
                tests/test_occlusion.py::test_matches_captum_on_course_model[24-10-mean-prob]
test-isa: data
	$(ISA_ENV) COURSE_FAST=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=5 \
	  -k "$(ISA_SKIP)" $(foreach t,$(ISA_DESELECT),--deselect "$(t)") $(ISA_TESTS)

book: data book-setup
	env -u COURSE_FAST $(BIN)/python tools/book.py build --jobs $(BOOK_JOBS) --out build $(NOTEBOOKS)

# the website builder (Jupyter Book 1.x) lives in a venv of its own
BOOK_VENV := .venv-book
BOOK_JOBS ?= 2   # notebooks run side by side by `make book` (each kernel gets cores/jobs threads)
book-setup: $(BOOK_VENV)/.installed

$(BOOK_VENV)/.installed: requirements-book.txt
	$(call venv,$(BOOK_VENV),requirements-book.txt)

# the browser of the browser test (tests/test_browser.py); or COURSE_CHROMIUM=<a Chromium/Chrome binary>.
# Without its recommends (printer tools, GTK extras): headless Chromium needs only a font beside it.
chromium:
ifndef COURSE_CHROMIUM
	$(call system-package,chromium,chromium fonts-liberation,The browser test)
endif

# a venv made from a requirements file: $(call venv,FOLDER,REQUIREMENTS)
define venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -r $(2)
	$(call without-rfc3987-syntax,$(1))
	touch $@
endef

# jsonschema[format-nongpl] (wanted by jupyter-events and nbformat) brings rfc3987-syntax, which builds ~25
# Lark parsers when imported: 2.5 s in every process that imports nbformat (each nbgrader command, grading
# worker, Jupyter server, nbval run). Only the "iri" formats use it, and no Jupyter schema has them
# (python-jsonschema/jsonschema#1428); without it jsonschema skips those checks. $(call without-rfc3987-syntax,VENV)
define without-rfc3987-syntax
	$(1)/bin/python -m pip uninstall --quiet --yes rfc3987-syntax
endef

# a system package, installed with apt-get when missing and we may (root):
# $(call system-package,COMMAND,PACKAGE,WHO NEEDS IT)
define system-package
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2); \
	  else echo "$(3) needs $(2): sudo apt-get install $(2) (or your system's package)"; exit 1; fi; }
endef

clean:
	rm -rf build $(VENV) $(BOOK_VENV)

# ---------------------------------------------------------------------------------------------
# Exercises (nbgrader), for instructors -- see "For instructors" in README.md.
#   make grader-setup   the grading tools: a separate venv with nbgrader, and bubblewrap
#   make release        exercises/source/ -> exercises/release/ (no solutions, no hidden tests)
#   make autograde      grade exercises/submitted/<student>/<exercise>/<exercise>.ipynb, each
#                       in a sandbox; SUBMISSIONS=<folder> copies such a folder in first
#                       (the notebook and timestamp.txt only, regular files, never through a
#                       link: python -m grader collect); unsafe ids, and everything beside
#                       the notebook, go to exercises/refused/ (python -m grader scrub), and a
#                       submission nbgrader fails on is graded as empty, with the reason
#                       (python -m grader autograde); WORKERS=N submissions side by side (default:
#                       what the cores and memory allow), only new or changed ones unless
#                       AUTOGRADE_ARGS=--force; AUTOGRADE_ARGS="--scheduler tcp://HOST:8786": on a
#                       Dask cluster (README, "For instructors")
#   make grades         exercises/grades.csv and exercises/feedback/<student>/<exercise>/*.html

GRADER_VENV  := exercises/.venv-grader
GRADER_BIN   := $(abspath $(GRADER_VENV))/bin
NBGRADER     := cd exercises && PATH="$(GRADER_BIN):$$PATH" OMP_NUM_THREADS=1 $(GRADER_BIN)/nbgrader

.PHONY: grader-setup bubblewrap release autograde grades

grader-setup: $(GRADER_VENV)/.installed bubblewrap

$(GRADER_VENV)/.installed: requirements-grader.txt
	$(call venv,$(GRADER_VENV),requirements-grader.txt)

# the sandbox for students' code
bubblewrap:
	$(call system-package,bwrap,bubblewrap,Grading)

release: grader-setup
	$(NBGRADER) generate_assignment "*" --force

autograde: data grader-setup
ifdef SUBMISSIONS
	cd exercises && $(GRADER_BIN)/python -m grader collect "$(abspath $(SUBMISSIONS))"
endif
	cd exercises && $(GRADER_BIN)/python -m grader scrub
	@ls exercises/submitted/*/*/*.ipynb >/dev/null 2>&1 || { echo "nothing to grade in exercises/submitted/"; exit 1; }
	$(NBGRADER) generate_assignment "*" --force --CourseDirectory.release_directory=.release-check
	cd exercises && PATH="$(GRADER_BIN):$$PATH" OMP_NUM_THREADS=1 $(GRADER_BIN)/python -m grader autograde "*" \
	  $(if $(WORKERS),--workers $(WORKERS)) $(AUTOGRADE_ARGS)

grades: grader-setup
	$(NBGRADER) export --to grades.csv
	$(NBGRADER) generate_feedback "*" --force
