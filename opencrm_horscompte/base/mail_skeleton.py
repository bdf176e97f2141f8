"""Mails rendered once per template and locale, then filled per message.

A validation mail differs from the next one only by its code and the démarche's title, and
rendering its three parts through Jinja was most of a lookup's CPU time. A *skeleton* is
the mail rendered once with stand-ins for the values that change per message; a message
is the skeleton with each stand-in replaced by its value (HTML-escaped in the HTML part):
the text a direct render would have given.

A skeleton is used only once it has proved it: when it is built, it is filled with probe
values and compared with direct renders of the same values. A template that transforms a
filled value (``|upper``, slicing the code, branching on its length) fails the proof and
is rendered directly for every message instead, as before.

Skeletons are built for every supported locale at once, so the locales a process has seen
so far never change what a message costs: a lookup's two branches (a match in the
dossier's locale, a decoy in the page's) do the same work from the first request on.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.i18n import DEFAULT_LOCALE, LOCALES, supported
from opencrm_horscompte.base.rendering import mail_context, render_mail
from opencrm_horscompte.hookspecs.host import Host, MailMessage, MailTemplate

MAX_SKELETONS = 256
# Probe values: digits (a code), and text that HTML escaping and whitespace folding change.
PROBES = ("0123456789", "Démarche <b>&amp;</b> « 'x' \"y\" »  z")
_NONCE = secrets.token_hex(6)  # per process: no value can contain a stand-in by chance


def stand_in(name: str) -> str:
    """Letters and digits only, so escaping and whitespace folding leave it whole."""
    return f"Zq{_NONCE}{name.replace('_', 'Q')}qZ"


# A part with its stand-ins cut out: the text before the first one, then each stand-in's
# name with the text that follows it.
_Cut = tuple[str, tuple[tuple[str, str], ...]]


def _cut(part: str, names: tuple[str, ...]) -> _Cut:
    if not names:
        return part, ()
    name_of = {stand_in(name): name for name in names}
    marks = "|".join(re.escape(mark) for mark in name_of)
    pieces = re.split(f"({marks})", part)  # text, mark, text, mark, ..., text
    names_found = [name_of[mark] for mark in pieces[1::2]]
    return pieces[0], tuple(zip(names_found, pieces[2::2], strict=True))


def _join(cut: _Cut, values: Mapping[str, str]) -> str:
    head, rest = cut
    out = [head]
    for name, after in rest:
        out.append(values[name])
        out.append(after)
    return "".join(out)


@dataclass(frozen=True)
class Skeleton:
    """A mail rendered with stand-ins, each part cut at them once: filling it joins the
    pieces with the values (one pass, instead of one search per name and part)."""

    subject: _Cut
    text: _Cut
    html: _Cut | None
    names: tuple[str, ...]

    @classmethod
    def from_marked(cls, marked: MailMessage, names: tuple[str, ...]) -> Skeleton:
        """The skeleton of a mail rendered with :func:`stand_in` for each of ``names``."""
        html = None if marked.html is None else _cut(marked.html, names)
        return cls(_cut(marked.subject, names), _cut(marked.text, names), html, names)

    def fill(self, to: str, values: Mapping[str, str]) -> MailMessage:
        plain = {name: str(values[name]) for name in self.names}
        html = None
        if self.html is not None:
            html = _join(self.html, {name: str(escape(value)) for name, value in plain.items()})
        return MailMessage(
            to=to,
            subject=" ".join(_join(self.subject, plain).split()),
            text=_join(self.text, plain),
            html=html,
        )


_Key = tuple[Any, ...]
_skeletons: dict[_Key, dict[str, Skeleton | None]] = {}
_lock = threading.Lock()


def render_filled_mail(
    host: Host,
    to: str,
    template: MailTemplate,
    context: Mapping[str, Any],
    filled: Mapping[str, str],
    locale: str,
    hooks: PluginHooks | None = None,
) -> MailMessage:
    """What ``render_mail(host, to, template, {**context, **filled}, locale)`` returns,
    from a skeleton of ``template`` and ``context`` (the values shared by many messages,
    hashable) filled with ``filled`` (this message's own strings). ``hooks``: the caller's,
    if it holds them (the loaders are asked through them)."""
    # What the render depends on besides the template: the host's and plugins' template
    # loaders (held by the key, so never confused with a later host's) and the signature.
    loaders = (host.template_loader, *(hooks or PluginHooks(host)).template_loaders())
    shared = (*sorted(context.items()), *sorted(mail_context(host, DEFAULT_LOCALE).items()))
    key: _Key = (loaders, template, shared, tuple(sorted(filled)))
    try:
        by_locale = _skeletons.get(key)
    except TypeError:  # an unhashable context value: no skeleton for it
        return render_mail(host, to, template, {**context, **filled}, locale)
    if by_locale is None:
        by_locale = _build(host, template, context, tuple(sorted(filled)))
        with _lock:
            while len(_skeletons) >= MAX_SKELETONS:
                _skeletons.pop(next(iter(_skeletons)))
            _skeletons[key] = by_locale
    skeleton = by_locale[supported(locale)]
    if skeleton is None:
        return render_mail(host, to, template, {**context, **filled}, locale)
    return skeleton.fill(to, filled)


def _build(
    host: Host, template: MailTemplate, context: Mapping[str, Any], names: tuple[str, ...]
) -> dict[str, Skeleton | None]:
    return {locale: _proved(host, template, context, names, locale) for locale in LOCALES}


def _proved(
    host: Host,
    template: MailTemplate,
    context: Mapping[str, Any],
    names: tuple[str, ...],
    locale: str,
) -> Skeleton | None:
    """The skeleton of ``template`` in ``locale``, or None if filling it would not give what
    a direct render gives (or the template fails on a stand-in)."""
    to = "probe@example.invalid"
    try:
        marked = render_mail(host, to, template, {**context, **_marks(names)}, locale)
        skeleton = Skeleton.from_marked(marked, names)
        for probe in PROBES:
            values = dict.fromkeys(names, probe)
            direct = render_mail(host, to, template, {**context, **values}, locale)
            if skeleton.fill(to, values) != direct:
                return None
    except Exception:  # a template that can't take a stand-in: render it directly
        return None
    return skeleton


def _marks(names: tuple[str, ...]) -> dict[str, str]:
    return {name: stand_in(name) for name in names}


def forget_skeletons() -> None:
    """Drop every skeleton (tests that swap templates within one process)."""
    with _lock:
        _skeletons.clear()
