# Quick start: `make demo` and `make test`. Every target installs first (idempotent).
# CONSTRAINTS=constraints.txt installs the exact versions the README's latest figures were measured with.
CONSTRAINTS ?=
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST ?= $(PYTHON) -m pytest
export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE = 1
export PIP_ROOT_USER_ACTION = ignore

.PHONY: install demo test test-all bench clean-phantom

install:
	@sh scripts/ensure_openjpeg.sh
	@$(PIP) install --disable-pip-version-check -q -r requirements.txt $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	@$(PIP) install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@$(PYTHON) -c "import glymur, sys; v = glymur.version.openjpeg_version; sys.exit(0 if v and v != '0.0.0' else 'error: glymur does not find OpenJPEG (libopenjp2); see README troubleshooting')"

demo: install
	$(PYTHON) -m src.demo

# Both run ruff (rules in pyproject.toml) first; `test` skips the tests marked slow (end-to-end demo,
# robustness, notebook execution, DDP), `test-all` runs everything.
test: install
	$(PYTHON) -m ruff check .
	$(PYTEST) -m "not slow"

test-all: install
	$(PYTHON) -m ruff check .
	$(PYTEST)

bench: install
	$(PYTHON) -m benchmarks.metric
	$(PYTHON) -m benchmarks.inference plumbing
	$(PYTHON) -m benchmarks.inference overlap --device-ms 30

clean-phantom:
	rm -rf data/phantom

# The Kaggle notebook's three datasets in $(KAGGLE_OUT)/{code,wheels,models} (README, Kaggle notebook):
#   make kaggle-datasets MODELS_2D='logs/a/*.ckpt logs/b/0' MODELS_3D='logs/c/*.ckpt' KAGGLE_ARGS=--skip-wheels
KAGGLE_OUT ?= dist/kaggle
.PHONY: kaggle-datasets
kaggle-datasets: install
	$(PYTHON) scripts/build_kaggle_datasets.py --out $(KAGGLE_OUT) \
		$(if $(MODELS_2D),--models-2d $(foreach g,$(MODELS_2D),'$(g)')) \
		$(if $(MODELS_3D),--models-3d $(foreach g,$(MODELS_3D),'$(g)')) $(KAGGLE_ARGS)

# The demo model trained on an independently written phantom and scored through src.predict on its test kidneys (README)
.PHONY: carryover
carryover: install
	$(PYTHON) -m benchmarks.carryover

# Each robustness lever measured on the phantom's kidney_5 (50.28 um) and kidney_6 (63.08 um), over seeds
# (README, Robustness levers):  make eval-robustness ROBUSTNESS_ARGS='--seeds 0,1,2 trainer.max_steps=200'
ROBUSTNESS_ARGS ?=
.PHONY: eval-robustness
eval-robustness: install
	$(PYTHON) -m src.robustness $(ROBUSTNESS_ARGS)
