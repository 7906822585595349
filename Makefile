# Two commands on a fresh machine: `make run` (set up, run the default experiment) and
# `make test` (set up, run the tests). Both create .venv and install the project into it, every
# package at its version in constraints.txt (the lock; `make lock` refreshes it: docs/development.md).
PYTHON ?= python3
# `make test` runs the suite on this many pytest-xdist workers (each test module on one; TEST_WORKERS=1: one worker)
TEST_WORKERS ?= 2
VENV := .venv
BIN := $(VENV)/bin
# No usage telemetry from MLflow: runs here must make no network calls.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

# `make server`: an MLflow tracking server for `nn-run tracking=server`, on loopback, with users: MLflow's
# basic-auth app (docs/tracking-server.md), a SQLite store and the artifacts under .mlflow-server/. On the
# first start it makes the admin's password and the Flask secret key, random, in files of mode 600 there
# (never printed), and the auth app's config (its user database; no password in it). It runs in its own
# session (process group) whose id is written to .mlflow-server/server.pid; `make server-stop` ends that
# group, uvicorn workers too. `make server-noauth`: the same server without users, for a laptop.
# `make server-user NAME=alice EXPERIMENT=nn-runner PERMISSION=EDIT`: add a user (asks for a password)
# and grant a permission on an experiment, as the admin.
SERVER_DIR := .mlflow-server
SERVER_PORT ?= 5000
SERVER_STORE ?= sqlite:///$(SERVER_DIR)/mlflow.db
SERVER_PID := $(SERVER_DIR)/server.pid
SERVER_LOG := $(SERVER_DIR)/server.log
SERVER_URL := http://127.0.0.1:$(SERVER_PORT)
SERVER_ADMIN := admin
SERVER_ADMIN_PASSWORD := $(SERVER_DIR)/admin_password
SERVER_SECRET_KEY := $(SERVER_DIR)/flask_secret_key
SERVER_AUTH_CONFIG := $(SERVER_DIR)/basic_auth.ini
EXPERIMENT ?= nn-runner
PERMISSION ?= EDIT
SERVER_OPTIONS ?=  # more `mlflow server` options, e.g. --allowed-hosts mlflow.example.org behind a reverse proxy
# how `make server` and `make server-noauth` start mlflow server, after the app's options (the command's tail)
SERVER_ARGS = --host 127.0.0.1 --port $(SERVER_PORT) --backend-store-uri $(SERVER_STORE) \
	  --artifacts-destination $(SERVER_DIR)/artifacts $(SERVER_OPTIONS) >> $(SERVER_LOG) 2>&1 < /dev/null & echo $$! > $(SERVER_PID); \
	if $(BIN)/python -c "import sys; from runner.tracking.uri import wait_for_server; \
	  sys.exit(not wait_for_server('$(SERVER_URL)', 120))"; then \
	  echo "MLflow server: $(SERVER_URL) (PID $$(cat $(SERVER_PID)), log $(SERVER_LOG)); stop it with make server-stop"; \
	else echo "MLflow server did not answer within 120 s; see $(SERVER_LOG)"; $(MAKE) --no-print-directory server-stop; exit 1; fi
SERVER_RUNNING = if [ -f $(SERVER_PID) ] && kill -0 "$$(cat $(SERVER_PID))" 2>/dev/null; then \
	  echo "MLflow server already running: $(SERVER_URL) (PID $$(cat $(SERVER_PID)))"; exit 0; fi

.PHONY: setup lock run test bench clean server server-noauth server-user server-stop

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/training_loop.py

server: setup
	@mkdir -p $(SERVER_DIR)
	@$(SERVER_RUNNING); umask 077; \
	for secret in $(SERVER_ADMIN_PASSWORD) $(SERVER_SECRET_KEY); do [ -s $$secret ] || \
	  $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $$secret || exit 1; done; \
	[ -s $(SERVER_AUTH_CONFIG) ] || printf '%s\n' '[mlflow]' 'default_permission = READ' \
	  'database_uri = sqlite:///$(abspath $(SERVER_DIR))/basic_auth.db' 'admin_username = $(SERVER_ADMIN)' \
	  'authorization_function = mlflow.server.auth:authenticate_request_basic_auth' > $(SERVER_AUTH_CONFIG); \
	echo "users: admin '$(SERVER_ADMIN)', its password in $(SERVER_ADMIN_PASSWORD) (mode 600: cat it); add users with make server-user"; \
	MLFLOW_AUTH_CONFIG_PATH=$(SERVER_AUTH_CONFIG) MLFLOW_AUTH_ADMIN_PASSWORD="$$(cat $(SERVER_ADMIN_PASSWORD))" \
	MLFLOW_FLASK_SERVER_SECRET_KEY="$$(cat $(SERVER_SECRET_KEY))" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	  setsid $(BIN)/mlflow server --app-name basic-auth $(SERVER_ARGS)

server-noauth: setup
	@mkdir -p $(SERVER_DIR)
	@$(SERVER_RUNNING); \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid $(BIN)/mlflow server $(SERVER_ARGS)

server-user: setup
	@if [ -z "$(NAME)" ]; then echo "usage: make server-user NAME=alice [EXPERIMENT=nn-runner] [PERMISSION=EDIT]"; exit 2; fi
	@MLFLOW_TRACKING_USERNAME=$(SERVER_ADMIN) MLFLOW_TRACKING_PASSWORD="$$(cat $(SERVER_ADMIN_PASSWORD))" \
	  $(BIN)/python -m runner.cli.server_user '$(NAME)' --experiment '$(EXPERIMENT)' --permission '$(PERMISSION)' \
	  --tracking-uri $(SERVER_URL)

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
