# Set-up and checks. `make demo` and `make test` each install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: the CPU wheel. GPU machines: install your CUDA torch into the venv first,
# then run `make install TORCH_SPEC=torch` (keeps the installed build).
TORCH_SPEC ?= torch==2.13.0
# Tested versions of every other dependency (CI installs exactly these); empty: the newest releases pyproject allows.
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install demo test test-latest constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINTS) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sgl-diffusion generate --model-path tiny-wan-t2v --prompt "a red fox running through fresh snow" \
		--seed 7 --output-path outputs --output-file-name demo.mp4

# The suite also starts real services from Debian packages (Chromium, PostgreSQL): installed first when missing.
test: install
	bash scripts/system_packages.sh
	$(BIN)/python -m pytest -q --durations=25

# The suite against the newest releases pyproject.toml allows, in its own venv (.venv-latest): run it before
# refreshing constraints.txt, so an upstream release breaks this target, not CI.
test-latest:
	$(MAKE) test VENV=.venv-latest CONSTRAINTS=

# Rewrite constraints.txt from a venv that passed the suite (default: the latest one).
constraints:
	{ sed -n '1,3p' constraints.txt; $(or $(wildcard .venv-latest/bin/python),$(BIN)/python) -m pip freeze --exclude-editable \
		| grep -viE '^(torch|sgld)[= ]'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .venv-latest .pytest_cache
