"""Positive controls for ``check_a11y``: pages with a known fault it must catch. Without
them, a broken axe run (no rules, wrong tags, a page that never loaded) would let every
accessibility test pass vacuously."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser

SOUND_PAGE = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Contrôle</title>
</head><body><main><h1>Contrôle</h1>{fault}</main></body></html>"""

FAULTS = {
    # WCAG 1.1.1: an image without a text alternative (axe rule image-alt)
    "image-alt": '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="40" height="40">',
    # WCAG 1.3.1 / 4.1.2: a field without a label (axe rule label)
    "label": '<form><input type="text" name="nom"></form>',
    # WCAG 1.4.3: light grey on white (axe rule color-contrast)
    "color-contrast": '<p style="color:#ddd;background:#fff">Texte illisible</p>',
}


def test_a_sound_page_passes(page: Any, check_a11y: Any) -> None:
    """The control pages are sound apart from their fault: the rule named is the cause."""
    page.goto("/")
    page.set_content(SOUND_PAGE.format(fault="<p>Rien à signaler.</p>"))
    check_a11y(page)


@pytest.mark.parametrize("rule", sorted(FAULTS))
def test_axe_catches_a_known_violation(page: Any, check_a11y: Any, rule: str) -> None:
    page.goto("/")
    page.set_content(SOUND_PAGE.format(fault=FAULTS[rule]))
    with pytest.raises(AssertionError, match=rf"axe violations on .*\n\s*{rule} \("):
        check_a11y(page)


def test_an_error_not_tied_to_its_field_is_caught(page: Any, check_a11y: Any) -> None:
    fault = '<label for="f">Nom</label><input id="f" aria-invalid="true">'
    page.goto("/")
    page.set_content(SOUND_PAGE.format(fault=fault))
    with pytest.raises(AssertionError, match="errors not tied to their field"):
        check_a11y(page)


def test_a_page_wider_than_the_viewport_is_caught(page: Any, check_a11y: Any) -> None:
    page.goto("/")
    page.set_content(SOUND_PAGE.format(fault='<div style="width:3000px">large</div>'))
    with pytest.raises(AssertionError, match="wider than the"):
        check_a11y(page)
