# Two entry points: `make demo` and `make test`. Each bootstraps a fresh machine by itself
# and skips what is already installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ztfl-installed
# litert-torch (int8 .tflite export) pins packages the runtime stack conflicts with: its own venv.
LITERT_VENV  := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.ztfl-installed
# keylime (the independent IMA verifier the attestation tests cross-check against) needs Debian's
# python3-gpg, which PyPI cannot build: its venv is made from Debian's Python with system packages.
KEYLIME_VENV  := .venv-keylime
KEYLIME_STAMP := $(KEYLIME_VENV)/.ztfl-installed

.PHONY: demo test bootstrap system-packages export-venv keylime-venv clean-venv

demo: bootstrap
	$(VENV)/bin/ztfl demo

test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests

bootstrap: system-packages $(STAMP) export-venv keylime-venv

system-packages:
	@bash scripts/install-system-packages.sh

# torch first: a CPU build of 2.13.0 is pinned so nothing else can pull a multi-GB CUDA build.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]'
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

export-venv: $(LITERT_STAMP)

# ztfl itself goes in without dependencies: the conversion worker imports only the model classes.
$(LITERT_STAMP): setup.py
	@test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(LITERT_VENV)/bin/python -m pip install -q torch==2.13.0
	$(LITERT_VENV)/bin/python -m pip install -q litert-torch==0.10.0 torch==2.13.0
	$(LITERT_VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $(LITERT_STAMP)

keylime-venv: $(KEYLIME_STAMP)

$(KEYLIME_STAMP):
	@test -x $(KEYLIME_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(KEYLIME_VENV)
	$(KEYLIME_VENV)/bin/python -m pip install -q keylime==7.14.3 jsonschema pyyaml lark packaging cryptography
	@touch $(KEYLIME_STAMP)
