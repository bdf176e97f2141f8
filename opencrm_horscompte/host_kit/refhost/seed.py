"""Demo data: démarches, a citizen account, an admin; the hors-compte plugin enabled."""

from __future__ import annotations

from sqlmodel import Session, select

from opencrm_horscompte.base.db import upsert_insert, writer
from opencrm_horscompte.base.emails import email_key, normalize_email
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.models import Account, Demarche, PluginState
from opencrm_horscompte.host_kit.refhost.passwords import hash_password

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
    """Insert what is missing; running it again changes nothing. Every insert is
    ``ON CONFLICT DO NOTHING``: worker processes starting together never collide. The agent
    account (role ``agent``: town-hall staff) is created when ``agent_password`` is given."""
    people = [
        (CITIZEN_EMAIL, citizen_password, "Camille Martin", "citizen"),
        (ADMIN_EMAIL, admin_password, "Alex Admin", "admin"),
    ]
    if agent_password:
        people.append((AGENT_EMAIL, agent_password, "Dominique Agent", "agent"))
    with Session(host.engine) as session:
        emails = set(session.exec(select(Account.email)))
        seeded_states = set(session.exec(select(PluginState.name)))
    # Passwords are hashed (slow) before the write transaction, and only when missing.
    accounts = [
        {
            "email": normalize_email(email),
            "email_key": email_key(normalize_email(email)),
            "display_name": name,
            "password_hash": hash_password(password),
            "role": role,
        }
        for email, password, name, role in people
        if email not in emails
    ]
    with writer(host.engine).begin() as connection:
        dialect = connection.dialect.name
        for demarche in DEMARCHES:
            values = demarche.model_dump(exclude={"id"})
            insert = upsert_insert(dialect, Demarche.__table__).values(**values)
            connection.execute(insert.on_conflict_do_nothing())
        for account in accounts:
            insert = upsert_insert(dialect, Account.__table__).values(**account)
            connection.execute(insert.on_conflict_do_nothing())
    if "horscompte" not in seeded_states:
        host.set_enabled("horscompte", True, actor="demo")
