"""Demo data: démarches, a citizen account, an admin; the hors-compte plugin enabled."""

from __future__ import annotations

from sqlmodel import Session, select

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.host_kit.refhost.accounts import create_account
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.models import Account, Demarche, PluginState

DEMARCHES = [
    Demarche(
        slug="signalement-voirie",
        title="Signaler un problème de voirie",
        description="Nid-de-poule, éclairage en panne, trottoir abîmé : prévenez les services "
        "techniques de la ville.",
        open_without_account=True,
    ),
    Demarche(
        slug="reservation-salle",
        title="Réserver une salle municipale",
        description="Demande de mise à disposition d'une salle pour une association.",
        open_without_account=True,
    ),
    Demarche(
        slug="carte-stationnement-resident",
        title="Carte de stationnement résident",
        description="Démarche réservée aux usagers connectés.",
        open_without_account=False,
    ),
]

CITIZEN_EMAIL = "camille.martin@exemple.fr"
ADMIN_EMAIL = "admin@demoville.fr"
AGENT_EMAIL = "agent@demoville.fr"


def seed(
    host: ReferenceHost,
    citizen_password: str,
    admin_password: str,
    agent_password: str | None = None,
) -> None:
    """Insert what is missing; running it again changes nothing. The agent account (role
    ``agent``: town-hall staff) is created when ``agent_password`` is given."""
    with Session(writer(host.engine)) as session, session.begin():
        existing = set(session.exec(select(Demarche.slug)))
        for demarche in DEMARCHES:
            if demarche.slug not in existing:
                session.add(Demarche(**demarche.model_dump(exclude={"id"})))
        emails = set(session.exec(select(Account.email)))
        if CITIZEN_EMAIL not in emails:
            create_account(session, CITIZEN_EMAIL, citizen_password, "Camille Martin")
        if ADMIN_EMAIL not in emails:
            create_account(session, ADMIN_EMAIL, admin_password, "Alex Admin", role="admin")
        if agent_password and AGENT_EMAIL not in emails:
            create_account(session, AGENT_EMAIL, agent_password, "Dominique Agent", role="agent")
        seeded_states = set(session.exec(select(PluginState.name)))
    if "horscompte" not in seeded_states:
        host.set_enabled("horscompte", True, actor="demo")
