"""Alembic environment of the plugin's migrations (see opencrm_horscompte.base.migrations)."""

from opencrm_horscompte.base.migrations import run_env

run_env()
