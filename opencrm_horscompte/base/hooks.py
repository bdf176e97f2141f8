"""Typed calls of the hooks the plugin itself calls, over ``host.hook`` (in the manner of
tox's plugin manager): one place states each hook's arguments and what comes back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jinja2

from opencrm_horscompte.hookspecs.horscompte import DRIVER_CONNECTION_MARK, AuditEvent
from opencrm_horscompte.hookspecs.host import MailTemplate

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from opencrm_horscompte.base.db import DriverConnection
    from opencrm_horscompte.hookspecs.host import Host
    from opencrm_horscompte.settings.schema import Settings

SYSTEM_ACTOR = "system"


class PluginHooks:
    """``PluginHooks(host).audit(...)`` instead of ``host.hook.horscompte_audit_event(...)``.

    ``host.hook`` is read once, when the object is made: one object serves one piece of
    work, whose calls then all see the same enabled plugins (a lookup that chose its path
    by the audit sinks enabled audits to those very sinks).
    """

    __slots__ = ("_hook", "_host")

    def __init__(self, host: Host) -> None:
        self._host = host
        self._hook = host.hook

    def audit(
        self,
        session: Session | DriverConnection,
        kind: str,
        details: Mapping[str, Any] | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> None:
        """Record an :class:`AuditEvent` at the host's ``now()`` in ``session``'s
        transaction (``horscompte_audit_event``, every implementation). A
        :class:`DriverConnection` only where :meth:`driver_level_writes` said yes."""
        host = self._host
        event = AuditEvent(kind, actor, host.now(), dict(details or {}))
        self._hook.horscompte_audit_event(host=host, session=session, event=event)

    def driver_level_writes(self) -> bool:
        """Whether a hot path may write on a :class:`DriverConnection`, without an ORM
        session: the host queues mail on one (``queue_mail_on_connection``) and every
        enabled ``horscompte_audit_event`` implementation takes one
        (:func:`~opencrm_horscompte.hookspecs.horscompte.takes_driver_connection`)."""
        host = self._host
        if getattr(host, "queue_mail_on_connection", None) is None:
            return False
        sinks = self._hook.horscompte_audit_event.get_hookimpls()
        return bool(sinks) and all(
            getattr(sink.function, DRIVER_CONNECTION_MARK, False) for sink in sinks
        )

    def generate_tracking_code(self, settings: Settings) -> object:
        """A candidate tracking code (``horscompte_generate_tracking_code``, firstresult);
        the caller checks it."""
        host = self._host
        return self._hook.horscompte_generate_tracking_code(host=host, settings=settings)

    def account_exists(self, email: str) -> bool:
        """``horscompte_account_exists`` (firstresult); no answer means no account. An
        answer other than True, False or None is a :class:`TypeError`: ``"no"`` is not
        read as "an account exists"."""
        host = self._host
        answer = self._hook.horscompte_account_exists(host=host, email=email)
        if answer is not None and not isinstance(answer, bool):
            raise TypeError(
                _wrong_answer("horscompte_account_exists", "True, False or None", answer)
            )
        return bool(answer)

    def mail_templates(self) -> list[MailTemplate]:
        """``opencrm_mail_templates`` then ``horscompte_validation_mail_templates``, every
        contribution flattened in hook order."""
        host = self._host
        contributed = [
            *self._hook.opencrm_mail_templates(host=host),
            *self._hook.horscompte_validation_mail_templates(host=host),
        ]
        hooks = "opencrm_mail_templates / horscompte_validation_mail_templates"
        for templates in contributed:
            if templates is not None and not isinstance(templates, list | tuple):
                raise TypeError(_wrong_answer(hooks, "a list of MailTemplate", templates))
        flattened = [template for templates in contributed for template in templates or ()]
        for template in flattened:
            if not isinstance(template, MailTemplate):
                raise TypeError(_wrong_answer(hooks, "a list of MailTemplate", template))
        return flattened

    def template_loaders(self) -> list[jinja2.BaseLoader]:
        """``horscompte_template_loader``: every loader contributed, in hook order."""
        host = self._host
        loaders = [loader for loader in self._hook.horscompte_template_loader(host=host) if loader]
        for loader in loaders:
            if not isinstance(loader, jinja2.BaseLoader):
                raise TypeError(
                    _wrong_answer("horscompte_template_loader", "a jinja2 loader", loader)
                )
        return loaders


def _wrong_answer(hook: str, expected: str, answer: object) -> str:
    # The type only: an answer's text may be personal data (an account, an address).
    return f"{hook} must answer {expected}, not a {type(answer).__name__}"
