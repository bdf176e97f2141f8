"""Claiming a dossier later: a logged-in citizen attaches a dossier they deposited without
an account (same address) to their account, through the host's optional
``attach_dossier`` (:mod:`.page`)."""
