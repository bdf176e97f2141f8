"""The identity step: when a new dossier's email has an account, propose logging in
(:mod:`.step`)."""

from opencrm_horscompte.base.paths import DECLINE_PATH
from opencrm_horscompte.identity.step import decline, identity_step

__all__ = ["DECLINE_PATH", "decline", "identity_step"]
