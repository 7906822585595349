# Two commands on a fresh machine: `make run` (set up, run the default experiment) and
# `make test` (set up, run the tests). Both create .venv and install the project into it, every
# package at its version in constraints.txt (the lock; `make lock` refreshes it: docs/development.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# No usage telemetry from MLflow: runs here must make no network calls.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

# `make server`: an MLflow tracking server for `nn-run tracking=server`, on loopback, with a SQLite
# store and the artifacts under .mlflow-server/. It runs in its own session (process group) whose
# id is written to .mlflow-server/server.pid; `make server-stop` ends that group, uvicorn workers too.
SERVER_DIR := .mlflow-server
SERVER_PORT ?= 5000
SERVER_STORE ?= sqlite:///$(SERVER_DIR)/mlflow.db
SERVER_PID := $(SERVER_DIR)/server.pid
SERVER_LOG := $(SERVER_DIR)/server.log
SERVER_URL := http://127.0.0.1:$(SERVER_PORT)

.PHONY: setup lock run test bench clean server server-stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# `make lock`: constraints.txt anew, from the newest versions pyproject.toml's ranges admit today,
# resolved in a throwaway venv (its header comment is kept). Then run `make test`.
lock:
	@set -e; venv=$$(mktemp -d); trap 'rm -rf "$$venv"' EXIT; \
	$(PYTHON) -m venv "$$venv"; "$$venv/bin/pip" install --quiet --upgrade pip; \
	"$$venv/bin/pip" install --quiet -e '.[test]'; \
	{ sed -n '/^#/p' constraints.txt; "$$venv/bin/pip" freeze --exclude-editable; } > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; git diff --stat constraints.txt

run: setup
	$(BIN)/nn-run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/training_loop.py

server: setup
	@mkdir -p $(SERVER_DIR)
	@if [ -f $(SERVER_PID) ] && kill -0 "$$(cat $(SERVER_PID))" 2>/dev/null; then \
	  echo "MLflow server already running: $(SERVER_URL) (PID $$(cat $(SERVER_PID)))"; exit 0; fi; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid $(BIN)/mlflow server --host 127.0.0.1 --port $(SERVER_PORT) \
	  --backend-store-uri $(SERVER_STORE) --artifacts-destination $(SERVER_DIR)/artifacts \
	  >> $(SERVER_LOG) 2>&1 < /dev/null & echo $$! > $(SERVER_PID); \
	if $(BIN)/python -c "import sys; from runner.tracking.uri import wait_for_server; \
	  sys.exit(not wait_for_server('$(SERVER_URL)', 120))"; then \
	  echo "MLflow server: $(SERVER_URL) (PID $$(cat $(SERVER_PID)), log $(SERVER_LOG)); stop it with make server-stop"; \
	else echo "MLflow server did not answer within 120 s; see $(SERVER_LOG)"; $(MAKE) --no-print-directory server-stop; exit 1; fi

server-stop:
	@if [ ! -f $(SERVER_PID) ]; then echo "no $(SERVER_PID): no server started by make server"; exit 0; fi; \
	pid=$$(cat $(SERVER_PID)); \
	if kill -TERM -$$pid 2>/dev/null; then \
	  for i in $$(seq 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.2; done; \
	  kill -KILL -$$pid 2>/dev/null && echo "MLflow server (PID $$pid) ignored SIGTERM for 10 s: killed"; \
	  echo "MLflow server (PID $$pid) stopped"; \
	else echo "MLflow server (PID $$pid) was not running"; fi; \
	rm -f $(SERVER_PID)

clean:
	rm -rf $(VENV) outputs multirun mlruns mlflow.db mlflow.db.lock

# `make slurm`: a throwaway single-node Slurm cluster with accounting on this machine, the one the
# tests use (tests/slurm_cluster.py; needs Debian's slurmctld slurmd slurmdbd slurm-client munge
# mariadb-server and root). Its slurm.conf, slurmdbd.conf, state, accounting database, logs and PID
# files are under .slurm/; it prints the `export SLURM_CONF=...` line for your shell. `make slurm-stop`
# cancels its jobs and stops its daemons by PID (slurmd, slurmctld, slurmdbd, its MariaDB and its own
# munged). See docs/slurm.md.
SLURM_DIR := .slurm
SLURM_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

.PHONY: slurm slurm-stop

slurm: setup
	@$(SLURM_PYTHON) tests/slurm_cluster.py start $(SLURM_DIR)

slurm-stop:
	@$(SLURM_PYTHON) tests/slurm_cluster.py stop $(SLURM_DIR)
