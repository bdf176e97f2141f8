"""CRM > Administration > Accès sans compte, through the reference host over HTTP."""

from __future__ import annotations

import html
import json
from typing import Any, ClassVar

import jinja2
import pytest
from conftest import ADMIN, CITIZEN, csrf_token, login, post
from sqlmodel import Session, select

from opencrm_horscompte.base.models import AuditRecord, SettingRow
from opencrm_horscompte.hookspecs.host import MailTemplate, hookimpl
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.host import TEMPLATES
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings

PAGE = "/admin/hors-compte"


def form_of(settings: Settings, **changes: Any) -> dict[str, str]:
    values = {**settings.as_dict(), **changes}
    form: dict[str, str] = {"action": "save"}
    for key, value in values.items():
        if value is True:
            form[key] = "on"
        elif value is not False:
            form[key] = str(value)
    return form


def saved_rows(host: Any) -> list[SettingRow]:
    with Session(host.engine) as session:
        return list(session.exec(select(SettingRow)))


def test_menu_entry_leads_to_the_page(client: Any) -> None:
    login(client, ADMIN)
    menu = client.get("/admin")
    assert f'href="{PAGE}"' in menu.text and "Accès sans compte" in menu.text
    page = client.get(PAGE)
    assert page.status_code == 200
    assert "Vérifier l'existence d'un compte" in page.text
    assert 'data-testid="tracking-sample"' in page.text


def test_anonymous_is_sent_to_login_and_citizen_is_refused(client: Any) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302 and "/connexion" in response.headers["Location"]
    login(client, CITIZEN)
    assert client.get(PAGE).status_code == 403
    assert f'href="{PAGE}"' not in client.get("/admin").text


def test_post_without_csrf_token_is_refused_and_saves_nothing(client: Any, host: Any) -> None:
    login(client, ADMIN)
    form = form_of(Settings.defaults(), tracking_code_length=16)
    response = client.post(PAGE, data=form)
    assert response.status_code == 400
    response = client.post(PAGE, data={**form, "csrf_token": "forged"})
    assert response.status_code == 400
    assert saved_rows(host) == []


def test_valid_change_is_saved_audited_and_applies_to_new_codes(client: Any, host: Any) -> None:
    login(client, ADMIN)
    form = form_of(Settings.defaults(), tracking_code_length=16, tracking_code_special=False)
    response = post(client, PAGE, form)
    assert response.status_code == 303
    page = client.get(PAGE)
    assert "Paramètres enregistrés" in page.text
    with Session(host.engine) as session:
        settings = load_settings(session)
        audit = session.exec(select(AuditRecord)).one()
    assert settings.tracking_code_length == 16 and not settings.tracking_code_special
    assert audit.actor == ADMIN[0] and audit.kind == "settings.changed"
    assert json.loads(audit.details_json) == {
        "tracking_code_length": [12, 16],
        "tracking_code_special": [True, False],
    }
    assert "Longueur du code : 12 → 16" in page.text


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"tracking_code_length": 7}, "tracking_code_length", "comprise entre 8 et 16"),
        ({"tracking_code_length": 17}, "tracking_code_length", "comprise entre 8 et 16"),
        ({"tracking_code_length": "douze"}, "tracking_code_length", "nombre entier"),
        ({"tracking_code_length": "1e1"}, "tracking_code_length", "nombre entier"),
        ({"validation_code_length": 5}, "validation_code_length", "comprise entre 6 et 14"),
        ({"validation_code_length": 15}, "validation_code_length", "comprise entre 6 et 14"),
        ({"validation_code_expiry_minutes": 0}, "validation_code_expiry_minutes", "entre 1 et 60"),
        (
            {"validation_code_expiry_minutes": 999999},
            "validation_code_expiry_minutes",
            "entre 1 et 60",
        ),
        ({"validation_code_expiry_minutes": "-5"}, "validation_code_expiry_minutes", "entier"),
        ({"validation_mail_template": "inconnu"}, "validation_mail_template", "modèle de courriel"),
        (
            {
                "tracking_code_digits": False,
                "tracking_code_uppercase": False,
                "tracking_code_lowercase": False,
                "tracking_code_special": False,
            },
            "tracking_code_classes",
            "au moins un type",
        ),
    ],
)
def test_bad_values_are_refused_next_to_their_field(
    client: Any, host: Any, changes: dict[str, Any], field: str, message: str
) -> None:
    login(client, ADMIN)
    response = post(client, PAGE, form_of(Settings.defaults(), **changes))
    assert response.status_code == 400
    assert f'id="{field}-error"' in response.text
    assert message in response.text
    assert saved_rows(host) == []


def test_the_error_summary_names_each_field_and_a_preview_says_it_is_one(
    client: Any, host: Any
) -> None:
    """Two fields share "Longueur du code": the summary said only "La valeur doit être
    comprise entre 8 et 16." and "... entre 6 et 14.", under "not saved" for a preview."""
    login(client, ADMIN)
    form = form_of(
        Settings.defaults(), tracking_code_length=99, validation_code_length=99, action="preview"
    )
    page = html.unescape(post(client, PAGE, form).text)
    assert "Code de suivi \u2013 Longueur du code : La valeur doit être comprise entre 8 et" in page
    assert "Code de validation \u2013 Longueur du code : La valeur doit être comprise entre" in page
    assert "L'aperçu n'a pas pu être fait" in page
    assert "Les paramètres n'ont pas été enregistrés" not in page
    assert "elles ne sont pas encore enregistrées" not in page
    form["action"] = "save"
    assert "Les paramètres n'ont pas été enregistrés" in html.unescape(
        post(client, PAGE, form).text
    )


def test_oversized_input_is_refused_cleanly(client: Any, host: Any) -> None:
    login(client, ADMIN)
    form = form_of(Settings.defaults(), tracking_code_length="9" * 5000)
    response = post(client, PAGE, form)
    assert response.status_code == 400
    assert saved_rows(host) == []


@pytest.mark.parametrize("action", [None, "", "enregistrer", "SAVE", "delete"])
def test_unknown_action_saves_nothing_and_keeps_the_typed_values(
    client: Any, host: Any, action: str | None
) -> None:
    """Only the two buttons' values act: a hand-made POST with another one changes nothing."""
    login(client, ADMIN)
    form = form_of(Settings.defaults(), tracking_code_length=15)
    if action is None:
        del form["action"]
    else:
        form["action"] = action
    response = post(client, PAGE, form)
    assert response.status_code == 400
    assert "Choisissez « Prévisualiser » ou « Enregistrer »." in response.text
    assert 'href="#action-save"' in response.text and 'id="action-save"' in response.text
    assert 'value="15"' in response.text
    assert saved_rows(host) == []


def test_preview_shows_submitted_values_without_saving(client: Any, host: Any) -> None:
    login(client, ADMIN)
    form = form_of(
        Settings.defaults(),
        action="preview",
        tracking_code_length=8,
        tracking_code_uppercase=False,
        tracking_code_lowercase=False,
        tracking_code_special=False,
    )
    response = post(client, PAGE, form)
    assert response.status_code == 200
    assert "ne sont pas encore enregistrées" in response.text
    assert 'data-testid="tracking-weak"' in response.text
    assert saved_rows(host) == []


def test_default_settings_are_not_called_weak(client: Any) -> None:
    login(client, ADMIN)
    page = client.get(PAGE)
    assert 'data-testid="tracking-weak"' not in page.text
    assert csrf_token(client) in page.text


def test_each_mail_template_is_previewed(client: Any) -> None:
    login(client, ADMIN)
    page = client.get(PAGE)
    assert "Aperçu des modèles de courriel de validation" in page.text
    assert "Votre code de validation pour « Signaler un problème de voirie (exemple) »" in page.text
    assert 'sandbox="" srcdoc="' in page.text  # HTML part shown inert, escaped into srcdoc


class ExtensionTemplates:
    """Another plugin's validation mail templates: one that renders, one that can't."""

    good = MailTemplate("test.good", "Sobre", "t/good_subject.txt", "t/good.txt", None)
    broken = MailTemplate("test.broken", "Cassé", "t/good_subject.txt", "t/broken.txt", None)
    sources: ClassVar[dict[str, str]] = {
        "t/good_subject.txt": "Code pour « {{ demarche_title }} »",
        "t/good.txt": "{{ code }}",
        "t/broken.txt": "{{ code }} {{ dossier_number.missing }}",
    }

    @hookimpl
    def horscompte_validation_mail_templates(self, host: Any) -> list[MailTemplate]:
        return [self.good, self.broken]


@pytest.fixture
def extended(host_factory: Any) -> tuple[Any, Any]:
    plugin = ExtensionTemplates()
    host = host_factory(extra_plugins=[plugin])
    host.template_loader = jinja2.ChoiceLoader([jinja2.DictLoader(plugin.sources), TEMPLATES])
    return host, create_app(host).test_client()


def test_a_template_that_cannot_render_is_not_saved(extended: tuple[Any, Any]) -> None:
    """Saved, it would have failed every lookup's mail: refused next to its field."""
    host, client = extended
    login(client, ADMIN)
    form = form_of(Settings.defaults(), validation_mail_template="test.broken")
    response = post(client, PAGE, form)
    assert response.status_code == 400
    assert 'id="validation_mail_template-error"' in response.text
    assert "Ce modèle ne peut pas être envoyé : UndefinedError" in html.unescape(response.text)
    assert '<option value="test.broken" selected>' in response.text  # the choice kept
    assert saved_rows(host) == []
    form = form_of(Settings.defaults(), validation_mail_template="test.good")
    assert post(client, PAGE, form).status_code == 303
    [row] = saved_rows(host)
    assert json.loads(row.value_json) == "test.good"


class TemplatesOfTheWrongType:
    @hookimpl
    def horscompte_validation_mail_templates(self, host: Any) -> list[Any]:
        return [{"key": "test.dict"}]


def test_a_templates_hook_of_the_wrong_type_is_reported_not_a_500(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[TemplatesOfTheWrongType()])
    client = create_app(host).test_client()
    login(client, ADMIN)
    page = client.get(PAGE)
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "Les modèles proposés par les autres modules n'ont pas pu être lus" in text
    assert "horscompte_validation_mail_templates must answer a list of MailTemplate" in text
    assert '<option value="horscompte.validation" selected>' in page.text
    form = form_of(Settings.defaults(), tracking_code_length=14)
    assert post(client, PAGE, form).status_code == 303  # the other settings still save


def test_history_says_yes_and_no_for_checkboxes(client: Any) -> None:
    login(client, ADMIN)
    post(client, PAGE, form_of(Settings.defaults(), tracking_code_special=False))
    assert "Avec des caractères spéciaux : oui → non" in client.get(PAGE).text
