# smtpd: the two commands of the README are `make run` and `make test`.
# Both create .venv on first use with a Python >= 3.12 found on PATH or in pyenv's
# versions folder.

VENV      := .venv
BENCH_VENV := .venv-bench
BENCH_ARGS ?=
VENV_PY   := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
CONFIG    ?= etc/smtpd.ini

.PHONY: run test check docs venv clean engines bench soak

run: $(STAMP)
	$(VENV)/bin/twistd -n smtpd --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/trial --temp-directory=$(VENV)/_trial_temp tests

check: $(STAMP)
	$(VENV)/bin/smtpctl --config $(CONFIG) check

# The configuration reference, generated from the schema (tests/test_docs.py checks it).
docs: $(STAMP)
	$(VENV_PY) -m smtpd.config.reference docs/configuration.md

venv: $(STAMP)

# The real engines the tests and benchmarks talk to (postfix, slapd, dovecot, haproxy,
# chromium, ...), from Debian packages, installed when missing (needs root); instant
# when all are present. Tests skip, naming the package, when one is not installed.
engines:
	@sh tools/engines.sh

# Side-by-side benchmark against Postfix and aiosmtpd (README: Benchmarks); never part of
# `make test`. Installs what it needs when missing: the engines (Debian postfix for the
# peer, smtp-source and smtp-sink) and a bench-only venv with aiosmtpd and matplotlib.
# Quick run: make bench BENCH_ARGS="--messages 500 --reps 1"
bench: $(STAMP) $(BENCH_VENV)/.installed
	@sh tools/engines.sh
	$(BENCH_VENV)/bin/python bench/bench.py --smtpd-venv $(VENV) $(BENCH_ARGS)

# A bounded soak run (README: Benchmarks), never part of `make test`: minutes of
# mixed traffic through one smtpd while RSS, descriptors, queue depth and reactor
# lag are recorded once a second; writes bench/results/soak.{md,json,png}.
# Example: make soak SOAK_ARGS="--minutes 10 --rate 100"
SOAK_ARGS ?=
soak: $(STAMP) $(BENCH_VENV)/.installed
	@sh tools/engines.sh
	$(BENCH_VENV)/bin/python bench/soak.py --smtpd-venv $(VENV) $(SOAK_ARGS)

$(BENCH_VENV)/.installed: $(VENV_PY)
	$(VENV_PY) -c 'import sys, venv; venv.main([sys.argv[1]])' $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q 'aiosmtpd>=1.4' 'matplotlib>=3.8'
	@touch $@

# The interpreter: the first of python3.13, python3.12, python3 on PATH, then pyenv's
# versions, that really runs and is >= 3.12 (pyenv shims exist but fail when the
# version is not selected, so each candidate is run, not just found).
$(VENV_PY):
	@py=""; \
	for c in python3.13 python3.12 python3 $$HOME/.pyenv/versions/*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do \
	  if "$$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then py="$$c"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "smtpd needs Python >= 3.12 with the venv module, and none was found on PATH or in ~/.pyenv/versions."; \
	  echo "Install one, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12', then run make again."; \
	  exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py ($$("$$py" -c 'import sys; print(sys.version.split()[0])'))"; \
	"$$py" -m venv $(VENV)

# A normal editable install, plus one .pth line with the checkout's path: twistd finds
# dropins by scanning sys.path for twisted/plugins/ folders, which an editable
# install's import hook does not provide. (A wheel, `pip install .`, carries the
# dropin itself: tests/test_packaging.py.)
$(STAMP): $(VENV_PY) setup.cfg pyproject.toml
	$(VENV_PY) -m pip install -q --upgrade pip
	$(VENV_PY) -m pip install -q -e '.[test]'
	@echo "$(CURDIR)" > "$$($(VENV_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/smtpd-checkout.pth"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) $(BENCH_VENV) _trial_temp build *.egg-info twisted/plugins/dropin.cache
