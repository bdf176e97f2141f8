"""The reference host's web app (Flask): démarches, the new-dossier flow, login, the admin's
plugin page and menu, and every enabled plugin's routes."""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import flask
import jinja2
from markupsafe import Markup
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlmodel import Session, col, select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter, Map

from opencrm_horscompte.base.db import MAX_ROW_ID
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import (
    DEFAULT_LOCALE,
    LOCALES,
    N_,
    Message,
    localized,
    translate,
    translations,
)
from opencrm_horscompte.base.paths import is_local_path
from opencrm_horscompte.hookspecs.host import PUBLIC_SECTION, Request, Route, User
from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.accounts import authenticate
from opencrm_horscompte.host_kit.refhost.adapter import to_flask, to_request
from opencrm_horscompte.host_kit.refhost.dossiers import (
    AlreadyDeposited,
    attach_to_account,
    create_draft,
    deposit,
    find_dossier,
    save_answers,
    update_identity,
)
from opencrm_horscompte.host_kit.refhost.forms import answers_form, identity_form
from opencrm_horscompte.host_kit.refhost.host import (
    TEMPLATES,
    ReferenceHost,
    account_user,
    has_permission,
)
from opencrm_horscompte.host_kit.refhost.models import Account, Demarche, Dossier
from opencrm_horscompte.host_kit.refhost.sessions import (
    LIFETIME,
    RevocableSessionInterface,
    UnverifiedSession,
    end_session,
)

log = logging.getLogger(__name__)
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
NOT_KEPT_FIELDS = {"csrf_token", "password"}  # never echoed back into a page
ADMINS_ONLY = N_("Cette page est réservée aux administrateurs.")
STAFF_ONLY = N_("Cette page est réservée aux agents et aux administrateurs.")
MAX_BODY = 64 * 1024
FORM_REFUSED = N_(
    "Ce formulaire a expiré ou ne vient pas de ce site. Rechargez la page et recommencez."
)
# No inline script anywhere, no style element: the CSP enforces it. Style *attributes* are
# allowed for the admin's preview of HTML mails (a sandboxed srcdoc iframe inherits this
# policy, and mails style inline); they cannot run script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Sec-Fetch-Site values a form of this site can send ("none": typed, bookmarked).
SAME_ORIGIN_FETCH = {"same-origin", "none"}


@functools.cache
def _environment(locale: str) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=TEMPLATES,
        autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
    )
    environment.install_gettext_translations(  # type: ignore[attr-defined]
        translations(locale), newstyle=True
    )
    return environment


class SegmentConverter(BaseConverter):
    """A path segment without control characters, of ``length`` characters at most (what
    its column holds). Anything else names no page (404), and never reaches the database,
    where a NUL is a data error on PostgreSQL."""

    def __init__(self, url_map: Map, length: int = 80) -> None:
        super().__init__(url_map)
        self.regex = f"[^/\\x00-\\x1f\\x7f]{{1,{int(length)}}}"


def create_app(host: ReferenceHost) -> flask.Flask:
    app = flask.Flask(__name__)
    app.url_map.converters["segment"] = SegmentConverter
    app.config.update(
        SECRET_KEY=host.secret_keys[-1],
        SECRET_KEY_FALLBACKS=list(host.secret_keys[:-1]),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=urlsplit(host.config.base_url).scheme == "https",
        PERMANENT_SESSION_LIFETIME=LIFETIME,
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    if host.config.trusted_proxies:  # X-Forwarded-For, resolved by werkzeug's own middleware
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=host.config.trusted_proxies, x_proto=0, x_host=0
        )
    app.session_interface = RevocableSessionInterface(host)

    def current_user() -> User | None:
        if "account_id" not in flask.g:
            account_id = flask.session.get("account_id")
            account = None
            if isinstance(account_id, int):
                with Session(host.engine) as session:
                    account = session.get(Account, account_id)
            flask.g.account_id = account_id
            flask.g.user = account_user(account) if account else None
        return cast("User | None", flask.g.user)

    def csrf_token() -> str:
        if "csrf" not in flask.session:
            flask.session["csrf"] = secrets.token_urlsafe(32)
        return str(flask.session["csrf"])

    def current_locale() -> str:
        chosen = flask.session.get("locale")
        if chosen in LOCALES:
            return str(chosen)
        return flask.request.accept_languages.best_match(LOCALES) or DEFAULT_LOCALE

    def contract_request(*, with_form: bool = True) -> Request:
        return to_request(current_user(), csrf_token(), current_locale(), with_form=with_form)

    def layout(request: Request) -> Any:
        try:
            return host.layout_context(request)
        except SQLAlchemyError:  # the menu needs the database: a page without it
            log.warning("layout without menu: database unavailable")
            return {"site_name": host.config.site_name, "menu": {}}

    def render(
        name: str, status: int = 200, *, with_form: bool = True, **context: Any
    ) -> flask.Response:
        request = contract_request(with_form=with_form)
        context = localized({**layout(request), **context}, request.locale)

        def when(value: Any, style: str = "datetime") -> str:
            """A stored UTC time, in the host's time zone, the page's language's way."""
            if style == "date":
                return translate(moment(host, value, "date"), request.locale)
            return translate(moment(host, value, "datetime"), request.locale)

        template = _environment(request.locale).get_template(name)
        body = template.render(request=request, when=when, **context)
        return flask.Response(body, status=status, content_type="text/html; charset=utf-8")

    def error_page(
        status: int, message: Message, links: Sequence[tuple[str, Message]] = ()
    ) -> flask.Response:
        """``links``: where to go from here (url, label), besides the home page."""
        # Never reads the body: it may be the reason for the error (413).
        return render(
            "error.html",
            status=status,
            with_form=False,
            status_code=status,
            message=message,
            links=list(links),
        )

    def foreign_origin() -> bool:
        """Second CSRF layer: the browser says where the form comes from."""
        origin = flask.request.headers.get("Origin")
        if origin is not None:
            ours = {flask.request.host_url.rstrip("/"), host.config.base_url.rstrip("/")}
            if origin.rstrip("/") not in ours:
                return True
        fetch_site = flask.request.headers.get("Sec-Fetch-Site")
        return fetch_site is not None and fetch_site not in SAME_ORIGIN_FETCH

    @app.before_request
    def session_checked() -> None:
        """A session the store could not check answers the outage page, as any other
        statement that fails would: it must not read as "no session" (a 404 for the
        visitor's own draft, a draft list overwritten)."""
        if isinstance(flask.session, UnverifiedSession):
            raise flask.session.store_error

    @app.before_request
    def check_csrf() -> flask.Response | None:
        if flask.request.method not in UNSAFE_METHODS:
            return None
        length = flask.request.content_length
        if length is not None and length > MAX_BODY:
            raise RequestEntityTooLarge()
        if flask.request.routing_exception is not None:
            return None  # no such page, or not this method (404, 405): nothing is done
        if foreign_origin():
            return error_page(400, FORM_REFUSED)
        sent = flask.request.form.get("csrf_token", "")
        expected = flask.session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            return error_page(400, FORM_REFUSED)
        return None

    @app.after_request
    def security_headers(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> flask.Response:
        messages = {
            404: N_("Cette page n'existe pas."),
            405: N_("Cette action n'est pas possible sur cette page."),
            413: N_("Les données envoyées sont trop volumineuses."),
        }
        status = error.code or 500
        return error_page(status, messages.get(status, N_("Une erreur est survenue.")))

    @app.errorhandler(DataError)
    def value_refused(error: DataError) -> flask.Response:
        """A value the database refuses (out of range, a NUL): the request's fault, not an
        outage, so neither the outage page nor an error in the log."""
        log.warning(
            "value refused by the database on %s %s: %s",
            flask.request.method,
            flask.request.path,
            error.orig,
        )
        return error_page(400, N_("La demande contient une valeur que le site ne peut pas lire."))

    @app.errorhandler(SQLAlchemyError)
    def database_unavailable(error: SQLAlchemyError) -> flask.Response:
        """Database down, lock timeout...: a 503 page that says what was kept and re-posts
        what the visitor typed, rendered without touching the database."""
        log.error(
            "database unavailable on %s %s: %s", flask.request.method, flask.request.path, error
        )
        return outage_page()

    def outage_page() -> flask.Response:
        user = flask.g.get("user")
        request = to_request(user, csrf_token(), current_locale())
        kept = [
            (name, value)
            for name, values in flask.request.form.lists()
            if name not in NOT_KEPT_FIELDS
            for value in values
        ]
        context = localized(
            {
                **layout(request),
                "kept": kept if flask.request.method in UNSAFE_METHODS else [],
                "retry_url": flask.request.full_path.rstrip("?"),
            },
            request.locale,
        )
        body = _environment(request.locale).get_template("unavailable.html")
        response = flask.Response(
            body.render(request=request, **context),
            status=503,
            content_type="text/html; charset=utf-8",
        )
        response.headers["Retry-After"] = "30"
        return response

    # ---------------------------------------------------------------- public pages

    @app.get("/")
    def home() -> flask.Response:
        with Session(host.engine) as session:
            demarches = list(session.exec(select(Demarche).order_by(col(Demarche.title))))
        return render(
            "home.html",
            demarches=demarches,
        )

    @app.route("/demarches/<segment(length=80):slug>/nouveau", methods=["GET", "POST"])
    def identity_screen(slug: str) -> flask.Response:
        with Session(host.engine, expire_on_commit=False) as session:
            demarche = session.exec(select(Demarche).where(Demarche.slug == slug)).first()
        if demarche is None:
            flask.abort(404)
        user = current_user()
        if not demarche.open_without_account and user is None:
            return redirect(host.login_url(flask.request.path))
        editing = editable_draft(flask.request.args.get("brouillon", ""), demarche)
        if flask.request.method == "GET":
            initial = (
                {k: getattr(editing, k) for k in ("email", "first_name", "last_name")}
                if editing
                else {"email": user.email if user else "", "first_name": "", "last_name": ""}
            )
            return render("identity.html", demarche=demarche, values=initial, errors={})
        values, errors = identity_form(flask.request.form)
        if errors:
            return render(
                "identity.html", status=400, demarche=demarche, values=values, errors=errors
            )
        if editing:
            draft = update_identity(host, editing.draft_key, values)
        else:
            account_id = user.id if user else None
            draft = create_draft(host, demarche, values, account_id, current_locale())
            flask.session["drafts"] = [*flask.session.get("drafts", [])[-19:], draft.draft_key]
        continue_url = flask.url_for("draft_form", draft_key=draft.draft_key)
        decision = host.hook.opencrm_identity_step(
            host=host,
            request=contract_request(),
            demarche=demarche,
            identity={
                **values,
                "draft": draft.draft_key,
                "continue_url": continue_url,
                "step": "1",
                "steps": "2",
            },
        )
        if decision is not None and decision.action == "propose_login" and decision.response:
            return to_flask(decision.response)
        return redirect(continue_url, 303)

    def editable_draft(draft_key: str, demarche: Demarche) -> Dossier | None:
        """The session's own draft of this démarche named by ``?brouillon=``, if any."""
        if not draft_key or draft_key not in flask.session.get("drafts", []):
            return None
        dossier = find_dossier(host, draft_key)
        if dossier is None or dossier.status != "draft" or dossier.demarche_id != demarche.id:
            return None
        return dossier

    def owned_draft(draft_key: str) -> Dossier:
        dossier = find_dossier(host, draft_key)
        user = current_user()
        if dossier is None:
            flask.abort(404)
        if dossier.account_id is not None:  # an account's: for that account only
            allowed = user is not None and dossier.account_id == user.id
        else:  # nobody's yet: for the browser session that started it
            allowed = draft_key in flask.session.get("drafts", [])
        if not allowed:
            flask.abort(404)
        return dossier

    @app.route("/brouillons/<segment(length=64):draft_key>", methods=["GET", "POST"])
    def draft_form(draft_key: str) -> flask.Response:
        dossier = owned_draft(draft_key)
        if dossier.status != "draft":
            return redirect(flask.url_for("receipt", draft_key=draft_key), 303)
        if flask.request.method == "GET":
            return render("form.html", dossier=dossier, values=dossier.answers, errors={})
        saving = flask.request.form.get("action") == "save"
        values, errors = answers_form(flask.request.form, complete=not saving)
        if saving and not errors:
            save_answers(host, draft_key, values)
            return render(
                "form.html",
                dossier=dossier,
                values=values,
                errors={},
                notice=(
                    N_("Brouillon enregistré.")
                    if dossier.account_id is not None
                    else N_(
                        "Brouillon enregistré dans ce navigateur. Sans compte, vous le "
                        "retrouvez depuis ce navigateur seulement, tant qu'il reste ouvert : "
                        "déposez la démarche avant de le fermer."
                    )
                ),
            )
        if errors:
            return render("form.html", status=400, dossier=dossier, values=values, errors=errors)
        try:
            deposit(host, draft_key, values, draft=dossier)
        except AlreadyDeposited:
            pass
        except Exception:
            log.exception("deposit of draft %s failed", draft_key)
            failure = N_(
                "Le dépôt n'a pas pu aboutir. Votre brouillon est conservé "
                "avec vos réponses : réessayez dans quelques instants."
            )
            try:
                save_answers(host, draft_key, values)
            except SQLAlchemyError:
                log.exception("saving the answers of draft %s failed too", draft_key)
                failure = N_(
                    "Le dépôt n'a pas pu aboutir et vos réponses n'ont pas pu être "
                    "enregistrées : elles sont conservées dans ce formulaire. "
                    "Renvoyez-le dans quelques instants."
                )
            return render(
                "form.html", status=503, dossier=dossier, values=values, errors={}, failure=failure
            )
        return redirect(flask.url_for("receipt", draft_key=draft_key), 303)

    @app.get("/brouillons/<segment(length=64):draft_key>/coordonnees")
    def edit_identity(draft_key: str) -> flask.Response:
        dossier = owned_draft(draft_key)
        with Session(host.engine) as session:
            demarche = session.get(Demarche, dossier.demarche_id)
        assert demarche is not None
        url = flask.url_for("identity_screen", slug=demarche.slug, brouillon=draft_key)
        return redirect(url, 303)

    @app.get("/brouillons/<segment(length=64):draft_key>/recu")
    def receipt(draft_key: str) -> flask.Response:
        dossier = owned_draft(draft_key)
        if dossier.status == "draft":
            return redirect(flask.url_for("draft_form", draft_key=draft_key), 303)
        fragments = host.hook.opencrm_dossier_receipt(
            host=host, request=contract_request(), dossier=dossier
        )
        return render(
            "receipt.html",
            dossier=dossier,
            fragments=[Markup(f) for fs in fragments for f in fs],
        )

    @app.get(f"/dossiers/<int(max={MAX_ROW_ID}):dossier_id>")
    def dossier_page(dossier_id: int) -> flask.Response:
        """A deposited dossier: for its account, or a visitor a plugin admits."""
        with Session(host.engine) as session:
            dossier = session.get(Dossier, dossier_id)
        user = current_user()
        if dossier is None or dossier.status == "draft":
            flask.abort(404)
        owner = user is not None and dossier.account_id == user.id
        staff = user is not None and user.is_agent  # agents instruct dossiers
        admitted = (
            owner
            or staff
            or host.hook.opencrm_dossier_access(
                host=host, request=contract_request(), dossier=dossier
            )
        )
        if not admitted:  # say how to get (back) in: an access may have just ended
            ways: list[tuple[str, Message]] = [
                (entry.url, N_(entry.label))  # "Suivre un dossier", from the plugins
                for entry in host.menu(user).get(PUBLIC_SECTION, [])
            ]
            if user is None:
                ways.append((host.login_url(flask.request.path), N_("Se connecter")))
            return error_page(403, N_("Vous n'avez pas accès à ce dossier."), ways)
        actions = []
        if staff:
            contributed = host.hook.opencrm_dossier_actions(
                host=host, request=contract_request(), dossier=dossier
            )
            actions = [
                action
                for batch in contributed
                for action in batch or ()
                if has_permission(user, action.permission)
            ]
        visitor = not (owner or staff)  # the citizen's "shared computer" box
        return render("dossier.html", dossier=dossier, actions=actions, visitor=visitor)

    @app.post(f"/dossiers/<int(max={MAX_ROW_ID}):dossier_id>/fin-acces")
    def end_access(dossier_id: int) -> flask.Response:
        """ "Terminer l'accès" on a shared computer: the server-side session ends (every copy
        of the cookie with it), and the new one keeps only the account, the language and the
        CSRF token (plugins' grants, drafts... are gone)."""
        kept = {
            key: flask.session[key]
            for key in ("account_id", "csrf", "locale")
            if key in flask.session
        }
        end_session(host, flask.session)
        flask.session.clear()
        flask.session.update(kept)
        return render(
            "message.html",
            title=N_("Accès terminé"),
            message=N_(
                "Ce navigateur n'a plus accès au dossier. Pour le revoir, il faudra de "
                "nouveau votre code de suivi et un code de validation."
            ),
        )

    # ---------------------------------------------------------------- accounts

    @app.route("/connexion", methods=["GET", "POST"])
    def login() -> flask.Response:
        next_url = _safe_next(flask.request.values.get("suivant", "/"))
        draft = draft_behind(next_url)
        if flask.request.method == "GET":
            email = draft.email if draft else ""
            return render("login.html", next_url=next_url, email=email, error=None, draft=draft)
        email = flask.request.form.get("email", "")[:320]
        with Session(host.engine) as session:
            account = authenticate(session, email, flask.request.form.get("password", "")[:1024])
        if account is None:
            return render(
                "login.html",
                status=400,
                next_url=next_url,
                email=email,
                error=N_("Adresse électronique ou mot de passe incorrect."),
                draft=draft,
            )
        assert account.id is not None
        drafts = attach_to_account(host, flask.session.get("drafts", []), account.id)
        chosen_locale = flask.session.get("locale")
        end_session(host, flask.session)  # a new session id at login (no fixation)
        flask.session.clear()
        flask.session["account_id"] = account.id
        flask.session["drafts"] = drafts
        if chosen_locale in LOCALES:
            flask.session["locale"] = chosen_locale  # the language chosen before logging in
        return redirect(next_url, 303)

    def draft_behind(next_url: str) -> Dossier | None:
        """The session's own draft that ``next_url`` continues (login from the proposal)."""
        parts = next_url.split("/")
        if len(parts) != 3 or parts[1] != "brouillons":
            return None
        if parts[2] not in flask.session.get("drafts", []):
            return None
        dossier = find_dossier(host, parts[2])
        return dossier if dossier is not None and dossier.status == "draft" else None

    @app.get("/mot-de-passe-oublie")
    def forgotten_password() -> flask.Response:
        """No reset flow in the reference host: say so, and who to contact."""
        return render("forgotten_password.html", contact=host.service_contact)

    @app.get("/langue/<locale>")
    def choose_language(locale: str) -> flask.Response:
        """The language switcher: remembered in the session, back to the same page."""
        if locale in LOCALES:
            flask.session["locale"] = locale
        return redirect(_safe_next(flask.request.args.get("suivant", "/")), 303)

    @app.post("/deconnexion")
    def logout() -> flask.Response:
        end_session(host, flask.session)  # every copy of the cookie ends here
        flask.session.clear()
        return redirect("/", 303)

    @app.get("/mon-espace")
    def my_space() -> flask.Response:
        user = current_user()
        if user is None:
            return redirect(host.login_url(flask.request.path))
        with Session(host.engine) as session:
            dossiers = list(
                session.exec(
                    select(Dossier)
                    .where(Dossier.account_id == user.id)
                    .order_by(col(Dossier.created_at).desc())
                )
            )
        return render("my_space.html", dossiers=dossiers)

    # ---------------------------------------------------------------- administration

    def require_admin() -> User | flask.Response:
        user = current_user()
        if user is None:
            return redirect(host.login_url(flask.request.full_path.rstrip("?")))
        if not user.is_admin:
            return error_page(403, ADMINS_ONLY)
        return user

    @app.get("/admin")
    def admin_home() -> flask.Response:
        user = require_admin()
        if isinstance(user, flask.Response):
            return user
        return render("admin.html")

    @app.route("/admin/plugins", methods=["GET", "POST"])
    def plugins_page() -> flask.Response:
        user = require_admin()
        if isinstance(user, flask.Response):
            return user
        notice = error = None
        if flask.request.method == "POST":
            name = flask.request.form.get("plugin", "")
            enable = flask.request.form.get("action") == "enable"
            try:
                host.set_enabled(name, enable, actor=user.email)
                notice = (
                    N_("Module « %(name)s » activé.", name=name)
                    if enable
                    else N_("Module « %(name)s » désactivé.", name=name)
                )
            except KeyError:
                error = N_("Ce module n'est pas installé ou n'a pas pu être chargé.")
            except Exception as failure:  # setup refused the host: shown, not raised
                error = N_("Le module n'a pas pu être activé : %(error)s", error=str(failure))
        return render(
            "plugins.html",
            status=400 if error else 200,
            plugins=host.plugins,
            disabled=host.disabled_names(),
            notice=notice,
            error=error,
        )

    @app.route("/admin/courriels", methods=["GET", "POST"])
    def outbox_page() -> flask.Response:
        user = require_admin()
        if isinstance(user, flask.Response):
            return user
        notice = error = None
        if flask.request.method == "POST":
            typed = flask.request.form.get("mail", "")
            readable = typed.isascii() and typed.isdigit() and len(typed) <= 10
            mail_id = int(typed) if readable else 0
            mail_id = mail_id if mail_id <= MAX_ROW_ID else 0
            if outbox.retry_now(host.engine, mail_id, host.now()):
                log.info("outbox mail %s: retry asked by %s", mail_id, user.email)
                notice = N_("Le courriel sera renvoyé dans quelques instants.")
            else:
                error = N_("Ce courriel ne peut pas être renvoyé (déjà remis ou abandonné).")
        return render(
            "outbox.html",
            status=400 if error else 200,
            counts=outbox.outbox_counts(host.engine),
            pending=outbox.pending_summary(host.engine),
            dead=outbox.dead_letters(host.engine),
            notice=notice,
            error=error,
        )

    for route in host.routes:
        _mount(app, host, route, contract_request, error_page, current_user)
    return app


def _mount(
    app: flask.Flask,
    host: ReferenceHost,
    route: Route,
    contract_request: Callable[[], Request],
    error_page: Callable[[int, Message], flask.Response],
    current_user: Callable[[], User | None],
) -> None:
    owner = route.plugin or ""

    def dispatch(**_: Any) -> flask.Response:
        if not host.is_enabled(owner):
            flask.abort(404)
        user = current_user()
        if route.permission and user is None:
            return redirect(host.login_url(_path_and_query()))
        if not has_permission(user, route.permission):
            return error_page(403, STAFF_ONLY if route.permission == "agent" else ADMINS_ONLY)
        return to_flask(route.handler(host, contract_request()))

    app.add_url_rule(
        route.path,
        endpoint=f"plugin:{owner}:{route.path}",
        view_func=dispatch,
        methods=list(route.methods),
    )


def _path_and_query() -> str:
    """This request's path with its query, if any: where to come back after a login."""
    query = flask.request.query_string.decode("latin-1")
    return f"{flask.request.path}?{query}" if query else flask.request.path


def redirect(location: str, code: int = 302) -> flask.Response:
    """``flask.redirect``, typed as what it returns inside an app: a ``flask.Response``."""
    return cast(flask.Response, flask.redirect(location, code))


def _safe_next(url: str) -> str:
    """Only same-site paths (open redirect): see :func:`.paths.is_local_path`."""
    return url if is_local_path(url) else "/"
