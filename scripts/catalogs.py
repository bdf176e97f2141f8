"""Extract, update and compile the translation catalogs (French source, fr + en).

    python scripts/catalogs.py          # extract, merge into the .po files, compile .mo
    python scripts/catalogs.py --check  # exit 1 if a catalog is missing or lacks a message

Sources: Python (``_``, ``N_``), the plugin's and the reference host's Jinja2 templates
(``_``, ``gettext``, ``{% trans %}``) and the labels and help of ``plugin.toml``. Needs
Babel (installed with the ``test`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "opencrm_horscompte" / "locale"
LOCALES = ("fr", "en")
DOMAIN = "messages"
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
JINJA = "jinja2.ext:babel_extract"
JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "trimmed": "false"}
SOURCES = [
    (ROOT / "opencrm_horscompte", [("**.py", "python"), ("**/refhost/templates/**.html", JINJA)]),
    (ROOT / "templates", [("**.html", JINJA), ("**.txt", JINJA)]),
]


def _from_sources() -> Iterator[tuple[str, str, int]]:
    for folder, methods in SOURCES:
        options = {pattern: JINJA_OPTIONS for pattern, method in methods if method == JINJA}
        for filename, lineno, message, _comments, _context in extract_from_dir(
            str(folder), methods, options_map=options, keywords=KEYWORDS, strip_comment_tags=True
        ):
            text = message[0] if isinstance(message, tuple) else message
            if text:
                yield text, str((folder / filename).relative_to(ROOT)), lineno


def _from_manifest() -> Iterator[tuple[str, str, int]]:
    manifest = tomllib.loads((ROOT / "plugin.toml").read_text("utf-8"))
    yield manifest["display_name"], "plugin.toml", 0
    for setting in manifest["settings"]:
        yield setting["label"], "plugin.toml", 0
        yield setting["help"], "plugin.toml", 0


def extract() -> Catalog:
    """Every user-facing source string, with where it comes from."""
    catalog = Catalog(project="opencrm-horscompte", locale="fr", fuzzy=False)
    for text, path, lineno in [*_from_sources(), *_from_manifest()]:
        catalog.add(text, locations=[(path, lineno)])
    return catalog


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def load(locale: str) -> Catalog:
    path = po_path(locale)
    if not path.exists():
        return Catalog(locale=locale, project="opencrm-horscompte")
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def missing(template: Catalog, locale: str) -> list[str]:
    """Source strings with no translation in ``locale`` (French: none may be missing from
    the catalog; English: each needs a non-empty translation)."""
    catalog = load(locale)
    gaps = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id)
        if found is None or found.fuzzy or (locale != "fr" and not found.string):
            gaps.append(str(message.id))
    return gaps


def update() -> None:
    for locale in LOCALES:
        catalog = load(locale)
        catalog.update(extract(), no_fuzzy_matching=True)  # a fresh template: update() shares it
        if locale == "fr":
            for message in catalog:
                if message.id and not message.string:
                    message.string = message.id
        path = po_path(locale)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, width=100, omit_header=False, ignore_obsolete=True)
        with path.with_suffix(".mo").open("wb") as handle:
            write_mo(handle, catalog)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report gaps, change nothing")
    args = parser.parse_args(argv)
    template = extract()
    if args.check:
        gaps = {locale: missing(template, locale) for locale in LOCALES}
        for locale, ids in gaps.items():
            for message_id in ids:
                print(f"{locale}: missing {message_id!r}")
        return 1 if any(gaps.values()) else 0
    update()
    print(f"{len(template)} messages; catalogs in {LOCALE_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
