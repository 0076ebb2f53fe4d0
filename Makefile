# Set-up and checks. `make demo` and `make test` each install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: the CPU wheel. GPU machines: install your CUDA torch into the venv first,
# then run `make install TORCH_SPEC=torch` (keeps the installed build).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sgl-diffusion generate --model-path tiny-wan-t2v --prompt "a red fox running through fresh snow" \
		--seed 7 --output-path outputs --output-file-name demo.mp4

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
