# Lodestone — the two commands are `make run` (demo) and `make test` (full suite).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)
PORT   ?= 8000
export PYTHONDONTWRITEBYTECODE=1

.PHONY: run test lint check venv lock system clean-demo

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## make run: the demo on SQLite, local files and a folder broker — no server needed.
run: export LODESTONE_SITE_URL ?= http://127.0.0.1:$(PORT)
run: $(STAMP)
# ffmpeg makes and transcodes the demo's video, pdftotext helps trace_leak. Without them
# (no root, no apt) the demo still starts, and its lesson says why it has no video.
	@bash infra/install-system-packages.sh --if-possible ffmpeg poppler-utils
	@mkdir -p var/celery/queue var/celery/processed var/celery/control var/mail var/protected var/media
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo --port $(PORT)
	PORT=$(PORT) $(BIN)/honcho --no-prefix -f infra/Procfile.demo start

## make test: lint, migration and deploy checks, then the whole suite on the real servers.
# The fault drills kill and restart private servers (Redis, PostgreSQL, SeaweedFS): they run
# in a pytest process of their own, so nothing they leave in the Celery app reaches the suite.
test: $(STAMP) system check
	$(BIN)/pytest --ignore=tests/drills $(PYTEST_ARGS)
	$(BIN)/pytest tests/drills $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: lint
	$(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=config.settings.production \
	DJANGO_SECRET_KEY=check-deploy-only-$$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	DJANGO_ALLOWED_HOSTS=lodestone.example DATABASE_URL=postgres://127.0.0.1/check \
	$(BIN)/python manage.py check --deploy --fail-level WARNING

## make system: Debian packages (Chromium, ffmpeg, poppler, qpdf, nginx) and the local
## PostgreSQL and Redis, each only if missing or down.
system:
	@bash infra/install-system-packages.sh
	@bash infra/ensure-services.sh >/dev/null

## make lock: re-resolve requirements.lock after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url -o requirements.lock pyproject.toml

clean-demo:
	rm -rf var/
