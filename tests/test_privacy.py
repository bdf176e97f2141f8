"""Data protection: retention applied by the scheduled purge (the clock moves), and the
right of access / erasure commands (``data export``, ``data erase``) on seeded data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN, new_client, post, through_proposal
from lookup_helpers import (
    EMAIL,
    STRANGER,
    change_settings,
    deposit,
    last_code,
    lookup,
    rows,
    start,
    submit,
    token_of,
)
from sqlmodel import Session, select

from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.limits import REPEAT_WINDOW
from opencrm_horscompte.base.models import (
    AuditRecord,
    Challenge,
    IdentityChoice,
    SettingRow,
    TrackingCode,
)
from opencrm_horscompte.cli import main
from opencrm_horscompte.privacy.retention import ANONYMISED
from opencrm_horscompte.privacy.subjects import mask_code, subject_hash
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings, save_settings

START = "/demarches/signalement-voirie/nouveau"


def decline_proposal(host: Any, email: str) -> None:
    """A visitor types ``email`` (which has an account) and continues without it."""
    client = new_client(host)
    client.get(START)
    typed = {"last_name": "Martin", "first_name": "Camille", "email": email}
    page = through_proposal(client, post(client, START, typed))
    token = token_of(page.text)
    response = post(client, "/hors-compte/identite/continuer", {"token": token})
    assert response.status_code == 303


def audit(host: Any, kind: str, details: dict[str, Any], actor: str = "system") -> None:
    with Session(host.engine) as session, session.begin():
        PluginHooks(host).audit(session, kind, details, actor=actor)


def purge(host: Any) -> dict[str, int]:
    [task] = [
        task
        for tasks in host.hook.opencrm_scheduled_tasks(host=host)
        for task in tasks
        if task.name == "horscompte.purge"
    ]
    return dict(task.run(host))


def set_retention(host: Any, **changes: int) -> None:
    with Session(host.engine) as session, session.begin():
        current = load_settings(session)
        save_settings(host, session, current.replace(**changes), actor=ADMIN[0])


# --------------------------------------------------------------------------- retention


def test_retention_settings_have_defaults_and_old_saved_settings_still_load(host: Any) -> None:
    defaults = Settings.defaults()
    assert defaults.retention_audit_personal_days == 365
    assert defaults.retention_identity_choice_days == 90
    assert defaults.retention_spent_state_days == 1
    # settings saved before these keys existed: the missing ones take their default
    with Session(host.engine) as session, session.begin():
        save_settings(host, session, defaults.replace(tracking_code_length=14), actor="x")
    with Session(host.engine) as session:
        loaded = load_settings(session)
    assert loaded.tracking_code_length == 14 and loaded.retention_identity_choice_days == 90


def test_admin_page_shows_and_validates_retention(client: Any, host: Any) -> None:
    post(client, "/connexion", {"email": ADMIN[0], "password": ADMIN[1]})
    page = client.get("/admin/hors-compte")
    assert "Conservation des données personnelles" in page.text
    assert 'id="retention_identity_choice_days"' in page.text
    form = {
        key: ("on" if value is True else str(value))
        for key, value in Settings.defaults().as_dict().items()
        if value is not False
    }
    refused = post(client, "/admin/hors-compte", {**form, "retention_audit_personal_days": "5"})
    assert refused.status_code == 400
    saved = post(
        client,
        "/admin/hors-compte",
        {**form, "retention_identity_choice_days": "7", "action": "save"},
    )
    assert saved.status_code == 303
    with Session(host.engine) as session:
        assert load_settings(session).retention_identity_choice_days == 7


def test_scheduled_purge_applies_the_retention_settings(client: Any, host: Any, clock: Any) -> None:
    set_retention(
        host,
        retention_identity_choice_days=10,
        retention_audit_personal_days=30,
        retention_spent_state_days=3,
    )
    deposited = deposit(client, host)
    used = start(client, EMAIL, deposited.code)
    assert submit(client, used, last_code(host)).status_code == 303
    decline_proposal(host, CITIZEN[0])
    audit(host, "agent.view", {"dossier": deposited.dossier_id}, actor="agent@demoville.fr")

    clock.advance(days=2)
    assert purge(host)["challenges"] == 0  # spent for 2 days, kept 3
    clock.advance(days=2)
    removed = purge(host)
    assert removed["challenges"] == 1 and rows(host, Challenge) == []
    assert removed["identity_choices"] == 0 and len(rows(host, IdentityChoice)) == 1

    clock.advance(days=7)  # 11 days: the choice goes, the audit stays nominative
    removed = purge(host)
    assert removed["identity_choices"] == 1 and rows(host, IdentityChoice) == []
    [event] = [r for r in rows(host, AuditRecord) if r.kind == "agent.view"]
    assert event.actor == "agent@demoville.fr"

    clock.advance(days=20)  # 31 days: personal audit events are anonymised
    removed = purge(host)
    assert removed["audit_actors"] >= 1 and removed["audit_details"] == 1
    records = rows(host, AuditRecord)
    [event] = [r for r in records if r.kind == "agent.view"]
    assert event.actor == "anonymised" and json.loads(event.details_json) == {}
    assert all(r.actor in ("system", "anonymised") for r in records)
    assert purge(host)["audit_actors"] == 0  # idempotent


# --------------------------------------------------------------------------- access, erasure


def seed_two_people(client: Any, host: Any) -> dict[str, Any]:
    """Two addresses with dossiers, lookups, a choice and audit events each."""
    change_settings(host, check_account_exists=False)  # deposit without the proposal
    mine = [deposit(client, host, email=CITIZEN[0]), deposit(client, host, email=CITIZEN[0])]
    other = deposit(client, host, email=EMAIL)
    start(client, CITIZEN[0], mine[0].code)
    start(client, EMAIL, other.code)
    start(client, STRANGER, other.code)  # a decoy: nobody's dossier
    change_settings(host, check_account_exists=True)
    decline_proposal(host, CITIZEN[0])
    decline_proposal(host, ADMIN[0])
    audit(host, "agent.resend", {"dossier": mine[1].dossier_id}, actor="agent@demoville.fr")
    audit(host, "agent.resend", {"dossier": other.dossier_id}, actor="agent@demoville.fr")
    audit(host, "settings.changed", {"tracking_code_length": [12, 14]}, actor=CITIZEN[0])
    return {"mine": mine, "other": other}


def export(database_url: str, email: str, capsys: Any) -> dict[str, Any]:
    assert main(["data", "export", "--email", email, "--database-url", database_url]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_export_of_a_seeded_address_contains_exactly_its_rows(
    client: Any, host: Any, database_url: str, capsys: Any
) -> None:
    seeded = seed_two_people(client, host)
    mine = seeded["mine"]
    report = export(database_url, " Camille.Martin@Exemple.fr ", capsys)

    assert report["address"] == CITIZEN[0]
    assert [d["dossier_id"] for d in report["dossiers"]] == [d.dossier_id for d in mine]
    for shown, dossier in zip(report["dossiers"], mine, strict=True):
        assert shown["tracking_code"] == mask_code(dossier.code)
        assert dossier.code not in json.dumps(report)
        assert shown["email"] == CITIZEN[0]
    assert [c["dossier_id"] for c in report["validation_codes"]] == [mine[0].dossier_id]
    assert [c["choice"] for c in report["identity_choices"]] == ["declined"]
    kinds = sorted((e["kind"], e["actor"]) for e in report["audit_events"])
    assert kinds == [("agent.resend", "agent@demoville.fr"), ("settings.changed", CITIZEN[0])]
    # the export itself is audited, under a pseudonym
    [exported] = [r for r in rows(host, AuditRecord) if r.kind == "privacy.export"]
    assert json.loads(exported.details_json) == {"subject": subject_hash(CITIZEN[0])}
    assert CITIZEN[0] not in exported.details_json

    other = export(database_url, EMAIL, capsys)
    assert [d["dossier_id"] for d in other["dossiers"]] == [seeded["other"].dossier_id]
    assert other["identity_choices"] == []
    nobody = export(database_url, "personne@nulle-part.fr", capsys)
    assert nobody["dossiers"] == [] and nobody["audit_events"] == []


def test_erase_removes_what_may_be_erased_and_keeps_the_others_data(
    client: Any, host: Any, database_url: str, capsys: Any
) -> None:
    seeded = seed_two_people(client, host)
    argv = ["data", "erase", "--email", CITIZEN[0], "--database-url", database_url]
    assert main([*argv, "--actor", "dpo@demoville.fr"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {
        "identity_choices": 1,
        "validation_codes": 1,
        "audit_events": 2,
        "settings_changed_last": 0,
        "tracking_codes": 0,
    }
    after = export(database_url, CITIZEN[0], capsys)
    assert after["identity_choices"] == [] and after["validation_codes"] == []
    assert len(after["dossiers"]) == 2  # kept while the host instructs the dossiers
    assert [e["kind"] for e in after["audit_events"]] == ["privacy.erase"]
    [erased] = [r for r in rows(host, AuditRecord) if r.kind == "privacy.erase"]
    assert erased.actor == "dpo@demoville.fr"
    # the other person's data is untouched
    other = export(database_url, EMAIL, capsys)
    assert len(other["dossiers"]) == 1 and len(other["validation_codes"]) == 1
    assert [e["kind"] for e in other["audit_events"]] == ["agent.resend"]
    assert len(rows(host, IdentityChoice)) == 1

    assert main([*argv, "--tracking-codes"]) == 0
    assert json.loads(capsys.readouterr().out)["tracking_codes"] == 2
    with Session(host.engine) as session:
        left = list(session.exec(select(TrackingCode.dossier_id)))
    assert left == [seeded["other"].dossier_id]


@pytest.mark.parametrize(
    ("written", "asked"),
    [
        ("agent@mairie-évry.fr", "AGENT@xn--mairie-vry-h7a.fr"),
        ("ÉLODIE.agent@demoville.fr", "ÉLODIE.agent@DEMOVILLE.fr"),
    ],
)
def test_an_actor_written_otherwise_than_its_key_is_exported_and_erased(
    host: Any, database_url: str, capsys: Any, written: str, asked: str
) -> None:
    """The actor column holds an address as typed (a Unicode domain, non-ASCII capitals):
    the SQL pre-filter compared it with the key, in punycode and with only ASCII letters
    folded, and missed it (red-team finding)."""
    audit(host, "agent.view", {"dossier": 1}, actor=written)
    audit(host, "agent.view", {"dossier": 2}, actor="someone@demoville.fr")
    report = export(database_url, asked, capsys)
    assert [e["actor"] for e in report["audit_events"]] == [written]
    argv = ["data", "erase", "--email", asked, "--database-url", database_url]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["audit_events"] == 2  # and the export's
    actors = sorted(r.actor for r in rows(host, AuditRecord) if r.kind == "agent.view")
    assert actors == sorted([ANONYMISED, "someone@demoville.fr"])


def test_the_settings_an_admin_changed_last_are_exported_and_erased(
    host: Any, database_url: str, capsys: Any
) -> None:
    with Session(host.engine) as session, session.begin():
        new = load_settings(session).replace(tracking_code_length=14)
        save_settings(host, session, new, actor="Admin@Demoville.fr")
    report = export(database_url, "admin@demoville.fr", capsys)
    assert [row["setting"] for row in report["settings_changed_last"]] == ["tracking_code_length"]
    argv = ["data", "erase", "--email", "admin@demoville.fr", "--database-url", database_url]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["settings_changed_last"] == 1
    with Session(host.engine) as session:
        row = session.get(SettingRow, "tracking_code_length")
        assert row is not None and row.updated_by == ANONYMISED
        assert load_settings(session).tracking_code_length == 14  # the setting itself stays


def test_data_commands_need_a_database_and_an_address(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, host: Any, database_url: str
) -> None:
    monkeypatch.delenv("HORSCOMPTE_DATABASE_URL", raising=False)
    assert main(["data", "export", "--email", CITIZEN[0]]) == 2
    assert "HORSCOMPTE_DATABASE_URL" in capsys.readouterr().err
    for url in ("nonsense://", "pas une URL"):  # a clear message, never a traceback
        assert main(["data", "export", "--email", CITIZEN[0], "--database-url", url]) == 2
        assert "invalid database URL" in capsys.readouterr().err
    monkeypatch.setenv("HORSCOMPTE_DATABASE_URL", database_url)
    assert main(["data", "export", "--email", "pas une adresse"]) == 2
    assert main(["data", "export", "--email", CITIZEN[0]]) == 0
    assert json.loads(capsys.readouterr().out)["address"] == CITIZEN[0]


def test_the_purge_deletes_the_audit_events_that_stood_in_for_a_mail(
    client: Any, host: Any, clock: Any
) -> None:
    """Every lookup or "code oublié" that matched nothing wrote one, past the limits too,
    and nothing ever deleted them: anyone could grow the table for good (outside test
    finding). They now go with the spent state; every other event stays."""
    set_retention(host, retention_spent_state_days=3)
    deposited = deposit(client, host)
    stranger = new_client(host)
    for attempt in range(3):
        lookup(stranger, STRANGER, deposited.code)
        post(stranger, "/hors-compte/code-oublie", {"email": f"personne{attempt}@exemple.fr"})
        clock.advance(seconds=REPEAT_WINDOW.total_seconds() + 1)  # not a repeated lookup
    audit(host, "agent.view", {"dossier": deposited.dossier_id}, actor="agent@demoville.fr")
    kinds = [r.kind for r in rows(host, AuditRecord)]
    assert kinds.count("lookup.miss") == 3 and kinds.count("forgotten.miss") == 3

    clock.advance(days=2)
    assert purge(host)["stand_in_events"] == 0  # kept as long as the spent state
    clock.advance(days=2)
    assert purge(host)["stand_in_events"] == 6
    left = [r.kind for r in rows(host, AuditRecord)]
    assert "lookup.miss" not in left and "forgotten.miss" not in left
    assert "agent.view" in left and len(left) == len(kinds) - 6
