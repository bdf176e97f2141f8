"""A second Open CRM host, in bare WSGI, written from docs/integrating.md only."""
