"""The receipt fragment: the tracking code shown after a deposit."""

from __future__ import annotations

from sqlmodel import Session

from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.rendering import render_fragment
from opencrm_horscompte.hookspecs.host import Dossier, Host, Request
from opencrm_horscompte.tracking.codes import format_tracking_code

TEMPLATE = "horscompte/receipt.html"
ACCOUNT_TEMPLATE = "horscompte/receipt_account.html"


def receipt_fragments(host: Host, request: Request, dossier: Dossier) -> list[str]:
    """What ``opencrm_dossier_receipt`` shows: the grouped code and how to follow the
    dossier; for an account's dossier (no code), where to follow it in "Mon espace"."""
    with Session(host.engine) as session:
        row = session.get(TrackingCode, dossier.id)
    if row is None and dossier.account_id is not None:
        context = {"dossier_url": host.dossier_url(dossier.id)}
        return [render_fragment(host, ACCOUNT_TEMPLATE, context, request.locale)]
    if row is None:
        return []
    context = {
        "tracking_code": format_tracking_code(row.code),
        "lookup_url": LOOKUP_PATH,
        "lookup_address": host.absolute_url(LOOKUP_PATH),
    }
    return [render_fragment(host, TEMPLATE, context, request.locale)]
