"""Finding a deposited dossier again: email + tracking code (:mod:`.start`), validation
code check and resend (:mod:`.validation`), the grant (:mod:`.grants`), the pages
(:mod:`.pages`), "code de suivi oublié" and the purge (:mod:`.purge`)."""

from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.lookup.start import (
    LookupInput,
    LookupInputError,
    read_input,
    start_lookup,
)

__all__ = ["LOOKUP_PATH", "LookupInput", "LookupInputError", "read_input", "start_lookup"]
