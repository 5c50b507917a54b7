# storage-notifier — `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8080
SANDBOX_DIR ?= .sandbox
# functions-framework's request threads (its default is CPUs x 4): a slow client holds one while it
# sends its headers, which the function cannot cut short (README "Limits"), so serve with more.
THREADS ?= 64

.PHONY: demo sandbox test bench bench-cold chaos burst format run clean help
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "storage-notifier needs Python 3.11 or newer (set PYTHON=python3.12)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

demo: $(VENV)/.installed  ## run the function locally and send it one event of each kind
	$(PY) -m notifier demo

sandbox: $(VENV)/.installed  ## gsutil cp → email on this machine: real emulators, the function; Ctrl-C stops all
	@# exec: make waits for the sandbox itself on Ctrl-C, not for a shell that dies at once
	@exec $(PY) -m notifier sandbox --dir "$(SANDBOX_DIR)"

test: $(VENV)/.installed  ## lint, format check, then the whole test suite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed  ## benchmarks beside the floor and textbook references: bench/results.md
	$(PY) -m bench.run

bench-cold: $(VENV)/.installed  ## the cold starts alone: as deployed, beside the floor and textbook (JSON)
	$(PY) -m bench.coldstart 5

chaos: $(VENV)/.installed  ## 5,000 uploads (1,000 held for digests) → Pub/Sub emulator → 2 instances; failing SendGrid and state bucket: 0 lost
	$(PY) -m bench.chaos --events 5000 --bulk 1000

burst: $(VENV)/.installed  ## 10,000 finalize events → Pub/Sub emulator → ONE instance as deploy.sh deploys it, saturated: 0 lost
	$(PY) -m bench.burst --events 10000

run: $(VENV)/.installed  ## serve the function on :8080 (outbox backend unless SENDGRID_API_KEY is set)
	THREADS=$(THREADS) $(VENV)/bin/functions-framework --target handle_storage_event --source main.py --port $(PORT)

format: $(VENV)/.installed  ## apply ruff's formatting and safe fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:  ## remove the virtualenv, outbox, previews and the sandbox's folder
	rm -rf $(VENV) outbox preview .sandbox .pytest_cache .ruff_cache
