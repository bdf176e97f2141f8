"""Literal translations resolved when a template is compiled, not on every render.

The plugin's environments are one per language (``rendering._environment``), so
``{{ _("Menu") }}`` always gives the same text in a given environment: this extension
replaces it, in the token stream, by that text, as template data. A page of the reference
host has about 17 such calls (layout included); through Jinja's newstyle ``gettext``,
each was a context call, a catalog lookup, a ``Markup`` and a ``%`` formatting, about 40 %
of a page's render.

Only an expression that is exactly ``_("...")`` or ``gettext("...")`` with one string
literal is replaced, by what the newstyle call returns: the translation, trusted as
markup under autoescape as ``Markup(translation)`` is, ``%%`` read as ``%``. Anything
else (arguments, ``ngettext``, a variable, a filter after the call) is left to Jinja at
render time. A literal whose translation can't be formatted without arguments is left
too, so it fails at render time as it did.
"""

from __future__ import annotations

from collections.abc import Iterator
from gettext import NullTranslations

from jinja2 import Environment
from jinja2.ext import Extension
from jinja2.lexer import (
    TOKEN_DATA,
    TOKEN_LPAREN,
    TOKEN_NAME,
    TOKEN_RPAREN,
    TOKEN_STRING,
    TOKEN_VARIABLE_BEGIN,
    TOKEN_VARIABLE_END,
    Token,
    TokenStream,
)

GETTEXT_NAMES = frozenset({"_", "gettext"})
# ``{{`` name ``(`` string ``)`` ``}}``
_PATTERN = (
    TOKEN_VARIABLE_BEGIN,
    TOKEN_NAME,
    TOKEN_LPAREN,
    TOKEN_STRING,
    TOKEN_RPAREN,
    TOKEN_VARIABLE_END,
)


class LiteralGettext(Extension):
    """Set ``environment.literal_catalog`` (the catalog installed with
    ``install_gettext_translations(..., newstyle=True)``) before the first template is
    compiled; without it, templates compile unchanged."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.extend(literal_catalog=None)

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        catalog: NullTranslations | None = getattr(self.environment, "literal_catalog", None)
        if catalog is None:
            yield from stream
            return
        pending: list[Token] = []
        for token in stream:
            if not pending and token.type != TOKEN_VARIABLE_BEGIN:
                yield token
                continue
            pending.append(token)
            position = len(pending) - 1
            if token.type != _PATTERN[position] or (
                token.type == TOKEN_NAME and token.value not in GETTEXT_NAMES
            ):
                yield from pending
                pending = []
            elif position == len(_PATTERN) - 1:
                yield from _folded(pending, catalog)
                pending = []
        yield from pending


def _folded(call: list[Token], catalog: NullTranslations) -> list[Token]:
    """``{{ _("literal") }}`` as the data it renders to, or unchanged."""
    try:
        text = catalog.gettext(call[3].value) % {}
    except (KeyError, TypeError, ValueError):
        return call
    return [Token(call[0].lineno, TOKEN_DATA, text)]
