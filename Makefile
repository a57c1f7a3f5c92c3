# Every target bootstraps .venv on first use.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test bench lint clean

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,plot]"
	touch $(VENV_STAMP)

demo: $(VENV_STAMP)
	.venv/bin/lra demo --workdir runs/demo

test: $(VENV_STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

bench: $(VENV_STAMP)
	.venv/bin/lra bench --task text --models all --lengths 1024,2048,4096 --batch 4 --out results/cpu/bench.json

# import-linter reads packages from disk: check a copy with configs/ and kernels/ inside lra/,
# as the wheel installs them (tests/test_wheel.py checks the installed wheel the same way).
lint: $(VENV_STAMP)
	.venv/bin/ruff check lra kernels configs tests scripts
	tmp=$$(mktemp -d) && cp -r lra $$tmp/ && cp -r configs $$tmp/lra/ && cp -r kernels $$tmp/lra/ && \
	  (cd $$tmp && PYTHONPATH=$$tmp $(CURDIR)/.venv/bin/lint-imports $(CURDIR)/pyproject.toml); \
	  rc=$$?; rm -rf $$tmp; exit $$rc

clean:
	rm -rf .venv runs
