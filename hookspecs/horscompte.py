"""Extension hooks of the hors-compte plugin, for other plugins.

They live on the host's plugin manager (project ``opencrm``): the plugin adds them through
``opencrm_add_hookspecs``. Implement them with ``pluggy.HookimplMarker("opencrm")``. The
plugin's own defaults are registered ``trylast``, so any other implementation goes first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

if TYPE_CHECKING:
    import jinja2
    from sqlalchemy.orm import Session

    from opencrm_horscompte.hookspecs.host import Host, MailTemplate
    from opencrm_horscompte.settings.schema import Settings

hookspec = pluggy.HookspecMarker("opencrm")
T = TypeVar("T")


@dataclass(frozen=True)
class AuditEvent:
    """Something worth recording: who did what, when.

    ``kind`` is dotted, e.g. ``"settings.changed"``; ``actor`` is the user's email or
    ``"system"``; ``details`` is JSON-serialisable (for settings: ``{key: [old, new]}``).
    """

    kind: str
    actor: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


@hookspec(firstresult=True)
def horscompte_generate_tracking_code(host: Host, settings: Settings) -> str | None:
    """Make one candidate tracking code for a dossier being deposited.

    :param host: the host.
    :param settings: the settings in force (length, character classes, ...).
    :return: a candidate code, or None to leave it to the next implementation (the plugin's
        default draws from ``secrets`` with the settings' alphabet).

    firstresult. The candidate must be 1 to 64 characters, each a digit ``0-9``, an ASCII
    letter ``A-Z`` / ``a-z`` or one of ``! $ * = @``, and must be what the lookup's
    normalisation of it gives back: no separator (space, ``-`` or any dash); letters in
    lower case if the settings select lower case only, in upper case if they do not select
    lower case; with both cases and ``avoid_ambiguous``, the case twins
    ``c k s u v w x y z`` as capitals only. Anything else (``2026-ABC-123``, ``AB CD``,
    fullwidth letters, markup) could be shown and mailed but never found again, so the
    deposit fails with ``ValueError`` instead. Uniqueness is the plugin's job: on a
    collision it asks again, a bounded number of times, then fails the deposit with
    ``TrackingCodeSpaceExhausted``.
    """


@hookspec(firstresult=True)
def horscompte_account_exists(host: Host, email: str) -> bool | None:
    """Does a CRM account exist for this address (the identity step asks)?

    :param host: the host.
    :param email: the address as typed, normalised (trimmed, NFC, validated); compare it
        with :func:`opencrm_horscompte.base.emails.email_key` on both sides.
    :return: True or False, or None to leave it to the next implementation (the plugin's
        default asks ``host.find_account``).

    firstresult: the first True or False wins, so a Keycloak or LDAP plugin replaces the
    host's accounts.
    """


DRIVER_CONNECTION_MARK = "horscompte_takes_driver_connection"


def takes_driver_connection(implementation: Callable[..., T]) -> Callable[..., T]:
    """Mark a ``horscompte_audit_event`` implementation that also accepts, as ``session``, a
    :class:`opencrm_horscompte.base.db.DriverConnection` inside the write transaction (run
    its statements with ``DriverStatement`` or on ``session.dbapi_connection``'s cursor).
    When every implementation is marked and the host has ``queue_mail_on_connection``, the
    lookup writes at driver level, without an ORM session (docs/integrating.md)."""
    setattr(implementation, DRIVER_CONNECTION_MARK, True)
    return implementation


@hookspec
def horscompte_audit_event(host: Host, session: Session, event: AuditEvent) -> None:
    """Record an audit event (settings changed, throttle hit, ...).

    :param host: the host.
    :param session: the session of the transaction the event belongs to; write there to
        commit the record with the change it describes. An implementation marked with
        :func:`takes_driver_connection` may get a ``DriverConnection`` there instead (the
        lookup's write transaction at driver level); an unmarked one always gets a session.
    :param event: the :class:`AuditEvent`.
    :return: nothing.

    Not firstresult: every implementation is called (the plugin's default stores the event
    in ``horscompte_audit_event``; another may forward it to a SIEM).
    """


@hookspec
def horscompte_validation_mail_templates(host: Host) -> list[MailTemplate]:
    """Mail templates meant for the validation code mail, besides the host's.

    :param host: the host.
    :return: a list of ``MailTemplate``. Their subject, text and HTML parts are rendered
        with ``code``, ``expiry_minutes``, ``demarche_title`` and ``lookup_url``
        (autoescaped in the HTML part), with Jinja2's i18n extension in the dossier's
        language. Their template names must be found by a loader: ship them with
        ``horscompte_template_loader``.

    Not firstresult: the "Courriel de validation" select lists every implementation's templates
    after those of ``opencrm_mail_templates``.
    """


@hookspec
def horscompte_template_loader(host: Host) -> jinja2.BaseLoader | None:
    """A Jinja2 loader for another plugin's templates (the mail templates it offers...).

    :param host: the host.
    :return: a ``jinja2.BaseLoader``, or None. Return the same object on every call (a
        module-level ``jinja2.PackageLoader``, say): environments are cached per set of
        loaders.

    Not firstresult: every loader returned is searched, after the host's
    ``template_loader`` (so a host still overrides any template) and before the plugin's
    own templates. Called whenever the plugin renders a page or a mail.
    """
