# Two entry points: `make demo` runs cloche end to end on an example, `make test` runs the suite.
# Each creates the virtual environment it needs in .venv (override with VENV=...).
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin
PYTEST_ARGS ?= -n auto

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: venv test lint demo image clean
venv: $(BIN)/.installed

# the static checks first: a type error fails in seconds, not after the suite
lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src/cloche

test: lint
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

demo: $(BIN)/.installed
	./examples/demo.sh $(BIN)/cloche

# cloche's own image, built by cloche (image/build.sh: a debootstrap base, cached; wheels from
# this checkout), then loaded into Docker when an engine answers. Needs root and debootstrap.
IMAGE ?= cloche:dev
image: $(BIN)/.installed
	image/build.sh --cloche $(BIN)/cloche --python $(BIN)/python --tag $(IMAGE)
	@if docker info >/dev/null 2>&1; then \
		$(BIN)/cloche save --format docker $(IMAGE) | docker load; \
	else \
		echo "no Docker engine answers; later: $(BIN)/cloche save --format docker $(IMAGE) | docker load"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
