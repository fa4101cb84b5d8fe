# Tessera — build, demo and test entry points.  `make demo` and `make test` install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := openssh-server dcmtk dicom3tools chromium chromium-driver faketime systemd litmus
APT_STAMP := $(VENV)/.apt-installed

.PHONY: install demo test test-slow lint typecheck unit bench clean docs dist

install: $(STAMP) $(APT_STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py src/tessera/core/_xor.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the distribution was called tessera before it became tessera-tde: drop that install
	$(PY) -m pip uninstall -q -y tessera 2>/dev/null || true
	rm -rf src/tessera.egg-info
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

# Debian packages the integration tests drive (sshd, storescu, dciodvfy, the console in
# headless Chromium, faketime for a custodian whose clock is skewed, litmus against the
# vault's WebDAV mount).  Installed
# only when running as root and they are missing; otherwise those tests skip.
$(APT_STAMP): Makefile
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi
	touch $(APT_STAMP)

demo: install
	bash scripts/demo.sh

lint: install
	$(VENV)/bin/ruff check src tests bench fuzz
	$(VENV)/bin/ruff format --check src tests bench fuzz
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy src

# The sources' bytecode is compiled first: the tests start hundreds of Python processes
# (nodes, MPC parties, the CLI), and with PYTHONDONTWRITEBYTECODE set each would
# compile every module it imports again.  Three workers: most integration tests wait on
# the processes they start.
test: lint docs
	$(PY) -m compileall -q -j 0 src
	$(VENV)/bin/pytest -q -n 3 --dist loadgroup -m "not slow"

# The tests too long for `make test`: the wheel in a clean venv running the demo, and
# the other tests marked slow.
test-slow: install
	$(PY) -m compileall -q -j 0 src
	$(VENV)/bin/pytest -q -n 3 --dist loadgroup -m slow

# The documentation site (mkdocs.yml), offline, into site/: the API reference must match
# the gateway's OpenAPI schema (docs/gen_api.py), docs/performance.md the committed bench
# results (bench/report.py), any warning fails the build, and no
# page may load a font, script, style or image from another host.
docs: install
	$(PY) docs/gen_api.py --check
	$(PY) bench/report.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	@! grep -rlE 'fonts\.(googleapis|gstatic)\.com' site || { echo "site/ uses web fonts"; false; }
	@! grep -rlE '<(script|link|img|iframe|source)[^>]* (src|href)="(https?:)?//|url\(.?(https?:)?//|@import' \
	  site --include='*.html' --include='*.css' || { echo "site/ loads from another host"; false; }

# The sdist and the wheel (with the compiled kernel) into dist/: tessera_tde-VERSION-*.whl.
dist: install
	$(PY) -m build --outdir dist

bench: install
	$(PY) bench/sharing.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
	find src -name '*.so' -delete
