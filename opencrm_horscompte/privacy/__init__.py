"""Data protection (RGPD): retention applied by the scheduled purge (:mod:`.retention`),
right of access and erasure by address (:mod:`.subjects`), their command line
(:mod:`.commands`). The inventory of personal data is in the README."""
