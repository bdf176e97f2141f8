"""The receipt fragment: the tracking code shown after a deposit, to the depositor only.

A host that forgets to restrict its receipt page must not leak every code. The deposit
stores the code with no proof; the first receipt view within ``RECEIPT_CLAIM_WINDOW`` of the
deposit (the depositor's own redirect, in practice) claims it: a random proof goes into
that browser's session and its SHA-256 onto the code's row, in one conditional ``UPDATE``.
From then on, the code is shown only to a session that holds the proof; any other request
(another browser, a late first view, a copied link) gets the fragment without the code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select, update

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.rendering import render_fragment
from opencrm_horscompte.hookspecs.host import Dossier, Host, Request
from opencrm_horscompte.tracking.codes import format_tracking_code

TEMPLATE = "horscompte/receipt.html"
ACCOUNT_TEMPLATE = "horscompte/receipt_account.html"
SESSION_KEY = "horscompte.receipts"
RECEIPT_CLAIM_WINDOW = timedelta(minutes=5)
MAX_PROOFS = 10

_CODES = TrackingCode.__table__
_ID = bindparam("b_dossier_id", type_=_CODES.c.dossier_id.type)
_READ = select(_CODES.c.code, _CODES.c.issued_at, _CODES.c.receipt_proof).where(
    _CODES.c.dossier_id == _ID
)
_CLAIM = (
    update(_CODES)
    .where(_CODES.c.dossier_id == _ID, _CODES.c.receipt_proof.is_(None))
    .values(receipt_proof=bindparam("proof", type_=_CODES.c.receipt_proof.type))
)


def _digest(proof: str) -> str:
    return hashlib.sha256(proof.encode()).hexdigest()


def _held_proof(request: Request, dossier_id: int) -> str | None:
    proofs = request.session.get(SESSION_KEY)
    proof = proofs.get(str(dossier_id)) if isinstance(proofs, dict) else None
    return proof if isinstance(proof, str) else None


def _claim(host: Host, request: Request, dossier_id: int) -> bool:
    proof = secrets.token_urlsafe(24)
    with writer(host.engine).begin() as connection:
        claimed = connection.execute(_CLAIM, {"b_dossier_id": dossier_id, "proof": _digest(proof)})
        if claimed.rowcount != 1:
            return False
    proofs = dict(request.session.get(SESSION_KEY) or {})
    proofs[str(dossier_id)] = proof
    request.session[SESSION_KEY] = dict(list(proofs.items())[-MAX_PROOFS:])
    return True


def receipt_fragments(host: Host, request: Request, dossier: Dossier) -> list[str]:
    """What ``opencrm_dossier_receipt`` shows: the grouped code (to the depositing session
    only) and how to follow the dossier; for an account's dossier (no code), where to
    follow it in "Mon espace"."""
    with host.engine.connect() as connection:
        row = connection.execute(_READ, {"b_dossier_id": dossier.id}).first()
    if row is None and dossier.account_id is not None:
        account_context = {"dossier_url": host.dossier_url(dossier.id)}
        return [render_fragment(host, ACCOUNT_TEMPLATE, account_context, request.locale)]
    if row is None:
        return []
    shown = False
    if row.receipt_proof is None:
        fresh = host.now() <= row.issued_at + RECEIPT_CLAIM_WINDOW
        shown = fresh and _claim(host, request, dossier.id)
    else:
        held = _held_proof(request, dossier.id)
        shown = held is not None and hmac.compare_digest(_digest(held), row.receipt_proof)
    context: dict[str, str | None] = {
        "tracking_code": format_tracking_code(row.code) if shown else None,
        "lookup_url": LOOKUP_PATH,
        "lookup_address": host.absolute_url(LOOKUP_PATH),
    }
    return [render_fragment(host, TEMPLATE, context, request.locale)]
