"""Every path the plugin serves, in one place. Templates receive the URLs they need in
their context (never as literals), so a host that mounts the plugin elsewhere changes
them here only."""

from __future__ import annotations

ADMIN_PATH = "/admin/hors-compte"
DECLINE_PATH = "/hors-compte/identite/continuer"
LOOKUP_PATH = "/hors-compte/suivi"
VALIDATE_PATH = "/hors-compte/validation"
FORGOTTEN_PATH = "/hors-compte/code-oublie"
AGENT_PATH = "/admin/hors-compte/assistance"
STATS_PATH = "/admin/hors-compte/statistiques"
STATS_CSV_PATH = "/admin/hors-compte/statistiques.csv"
CLAIM_PATH = "/hors-compte/rattacher"
ACCEPT_PATH = "/hors-compte/identite/connexion"
