"""What other plugins answer through the plugin's hooks is checked where it is read: an
answer of the wrong type is a TypeError that names the hook, not a value read by luck
("no" taken for "an account exists", a dict for a template)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import jinja2
import pluggy
import pytest

from opencrm_horscompte import plugin as plugin_module
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.hookspecs.host import PROJECT, MailTemplate, hookimpl


def hooks_with(extension: object) -> PluginHooks:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(host_specs)
    pm.hook.opencrm_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    pm.register(plugin_module, name="horscompte")
    pm.register(extension, name="extension")
    pm.check_pending()
    return PluginHooks(SimpleNamespace(hook=pm.hook))


class Accounts:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def horscompte_account_exists(self, host: Any, email: str) -> object:
        return self.answer


@pytest.mark.parametrize("answer", [True, False])
def test_a_yes_or_no_is_read_as_such(answer: bool) -> None:
    assert hooks_with(Accounts(answer)).account_exists("lea@exemple.fr") is answer


@pytest.mark.parametrize("answer", ["no", "False", 0, 1, [], object(), "lea@exemple.fr"])
def test_an_account_answer_that_is_not_a_bool_is_refused(answer: object) -> None:
    with pytest.raises(
        TypeError, match=r"^horscompte_account_exists must answer True, False"
    ) as raised:
        hooks_with(Accounts(answer)).account_exists("lea@exemple.fr")
    assert "lea@" not in str(raised.value)  # the type, not the text: it may be an address


class Templates:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def horscompte_validation_mail_templates(self, host: Any) -> object:
        return self.answer


def test_templates_of_the_right_type_are_listed() -> None:
    template = MailTemplate("x.mail", "X", "x_subject.txt", "x.txt", None)
    assert template in hooks_with(Templates([template])).mail_templates()


@pytest.mark.parametrize(
    "answer",
    [
        [{"key": "x"}],
        ["x.mail"],
        [("k", "l", "s", "t", None)],
        "x.mail",  # a string: not read a character at a time
        MailTemplate("x.mail", "X", "x_subject.txt", "x.txt", None),  # one, not a list
    ],
)
def test_templates_of_the_wrong_type_are_refused(answer: object) -> None:
    with pytest.raises(TypeError, match="must answer a list of MailTemplate"):
        hooks_with(Templates(answer)).mail_templates()


class Loaders:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def horscompte_template_loader(self, host: Any) -> object:
        return self.answer


def test_a_jinja_loader_is_taken() -> None:
    loader = jinja2.DictLoader({})
    assert hooks_with(Loaders(loader)).template_loaders() == [loader]


@pytest.mark.parametrize("answer", [{"a.txt": "x"}, "templates/", jinja2.Environment()])
def test_a_loader_of_the_wrong_type_is_refused(answer: object) -> None:
    with pytest.raises(TypeError, match=r"^horscompte_template_loader must answer a jinja2"):
        hooks_with(Loaders(answer)).template_loaders()
