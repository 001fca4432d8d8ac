"""Production settings refuse to start without their secrets, and say which one."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = "import django; django.setup(); print('started')"
GOOD = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "k" * 60,
    "DJANGO_ALLOWED_HOSTS": "academy.lodestone-demo.fi",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
}


def start(**overrides):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "STRIPE_", "DATABASE_URL"))
    }
    env.update({k: v for k, v in {**GOOD, **overrides}.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", SETUP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_production_starts_with_its_secrets():
    result = start()

    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_production_without_a_secret_key_fails_with_a_clear_message():
    result = start(DJANGO_SECRET_KEY=None)

    assert result.returncode != 0
    assert (
        "DJANGO_SECRET_KEY is not set. Production settings refuse to start without it"
        in result.stderr
    )


def test_production_refuses_a_short_secret_key():
    result = start(DJANGO_SECRET_KEY="too-short")

    assert result.returncode != 0
    assert "at least 50 random characters" in result.stderr


def test_production_with_stripe_on_needs_the_webhook_secret():
    result = start(STRIPE_SECRET_KEY="sk_live_x")

    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.stderr


def test_dev_settings_refuse_to_run_with_debug_off():
    result = start(DJANGO_SETTINGS_MODULE="config.settings.dev", DJANGO_DEBUG="false")

    assert result.returncode != 0
    assert "config.settings.dev is for local use" in result.stderr
