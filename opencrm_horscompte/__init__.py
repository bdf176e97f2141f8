"""opencrm-horscompte: account-less access to online procedures for an Open CRM host.

The plugin, grouped by capability (see ``docs/integrating.md``):

- ``settings``: CRM > Administration > Hors-compte (typed settings, storage, strength, page);
- ``tracking``: tracking codes and the deposit pipeline;
- ``identity``: the identity step (propose logging in);
- ``lookup``: email + tracking code -> validation code -> grant, and "code oublié";
- ``base``: what they share (database, tables, rendering, i18n, signed tokens, throttles);
- ``plugin``: the hook implementations a host registers.

``host_kit`` is host-side code, not the plugin: the plugin loader any host can use and the
reference host (``host_kit.refhost``).
"""

from opencrm_horscompte import _moved

__version__ = "0.2.0"

_moved.install()
