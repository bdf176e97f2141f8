"""Agent support: a dossier's hors-compte state by number (:mod:`.state`), and the actions
an agent takes for a citizen on the phone (:mod:`.actions`), on one page (:mod:`.page`).
The agent never sees a code; every view and action is audited and throttled."""
