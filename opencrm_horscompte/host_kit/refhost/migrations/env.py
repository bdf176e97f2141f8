"""Alembic environment of the reference host's own tables (``host_*``, version table
``host_alembic_version``): the same machinery as the plugin's, a separate history."""

from opencrm_horscompte.base.migrations import run_env

run_env()
