# Quick start: `make demo` and `make test`. Every target installs first (idempotent).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST ?= $(PYTHON) -m pytest
export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE = 1
export PIP_ROOT_USER_ACTION = ignore

.PHONY: install demo test test-all bench clean-phantom

install:
	@sh scripts/ensure_openjpeg.sh
	@$(PIP) install --disable-pip-version-check -q -r requirements.txt
	@$(PIP) install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@$(PYTHON) -c "import glymur, sys; v = glymur.version.openjpeg_version; sys.exit(0 if v and v != '0.0.0' else 'error: glymur does not find OpenJPEG (libopenjp2); see README troubleshooting')"

demo: install
	$(PYTHON) -m src.demo

test: install
	$(PYTEST) -m "not slow"

test-all: install
	$(PYTEST)

bench: install
	$(PYTHON) -m benchmarks.metric

clean-phantom:
	rm -rf data/phantom
