"""Literal ``_("...")`` calls are translated when a template compiles: the same output as
Jinja's newstyle gettext at render time, for every form it folds and every form it leaves."""

from __future__ import annotations

from gettext import NullTranslations
from typing import Any

import jinja2
import pytest

from opencrm_horscompte.base.literal_gettext import LiteralGettext
from opencrm_horscompte.base.rendering import environment

CATALOG = {
    "Bonjour": "Hello",
    "Gras": "<b>Bold</b> & co",
    "Taux": "100 %% sure",
    "Salut %(name)s": "Hi %(name)s",
    "pomme": "apple",
    "pommes": "apples",
}


class Catalog(NullTranslations):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def gettext(self, message: str) -> str:
        self.lookups += 1
        return CATALOG.get(message, message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.gettext(singular if n == 1 else plural)


def make_environment(folding: bool, autoescape: bool) -> tuple[jinja2.Environment, Catalog]:
    extensions: list[Any] = ["jinja2.ext.i18n"] + ([LiteralGettext] if folding else [])
    env = jinja2.Environment(extensions=extensions, autoescape=autoescape)
    catalog = Catalog()
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    if folding:
        env.literal_catalog = catalog  # type: ignore[attr-defined]
    return env, catalog


SOURCES = [
    "{{ _(\"Bonjour\") }} {{ gettext('Bonjour') }}",
    '<p title="{{ _("Gras") }}">{{ _("Gras") }}</p>',
    '{{ _("Taux") }}',
    '{{ _("Salut %(name)s", name=who) }}',
    '{{ _("Bonjour")|upper }} {{ _("Bonjour") ~ "!" }}',
    '{{ ngettext("pomme", "pommes", n) }} {{ _(word) }}',
    'a  {{- _("Bonjour") -}}  b',
    "{% if n %}{{ _('Bonjour') }}{% endif %}{{ other('Bonjour') }}",
    '{{ _("Inconnu") }}',
]


def other(text: str) -> str:
    return f"[{text}]"


@pytest.mark.parametrize("autoescape", [True, False])
@pytest.mark.parametrize("source", SOURCES)
def test_a_folded_template_renders_what_jinja_renders(source: str, autoescape: bool) -> None:
    context = {"who": "<Léa>", "n": 2, "word": "pomme", "other": other}
    rendered = [
        make_environment(folding, autoescape)[0].from_string(source).render(context)
        for folding in (False, True)
    ]
    assert rendered[1] == rendered[0]


def test_literal_calls_are_not_looked_up_at_render_time() -> None:
    env, catalog = make_environment(folding=True, autoescape=True)
    template = env.from_string('{{ _("Bonjour") }} {{ gettext("Gras") }} {{ _(word) }}')
    compiled_lookups = catalog.lookups
    assert (
        template.render(word="pomme") == "Hello <b>Bold</b> & co apple"
    )  # trusted, as newstyle gettext trusts it
    assert catalog.lookups == compiled_lookups + 1  # the variable's only


def test_a_literal_that_needs_arguments_still_fails_at_render_time() -> None:
    for folding in (False, True):
        env, _ = make_environment(folding, autoescape=True)
        template = env.from_string('{{ _("Salut %(name)s") }}')
        with pytest.raises(KeyError):
            template.render()


def test_without_a_catalog_templates_compile_unchanged() -> None:
    env = jinja2.Environment(extensions=["jinja2.ext.i18n", LiteralGettext])
    env.install_gettext_translations(Catalog(), newstyle=True)  # type: ignore[attr-defined]
    assert env.from_string('{{ _("Bonjour") }}').render() == "Hello"


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_the_plugins_environments_fold_with_their_own_catalog(host: Any, locale: str) -> None:
    page = environment(host, locale).from_string('{{ _("Code de validation") }}')
    assert page.render() == ("Validation code" if locale == "en" else "Code de validation")
