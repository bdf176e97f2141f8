"""A minimal Open CRM host in bare WSGI (standard library, SQLAlchemy Core, Jinja2), written
from docs/integrating.md only. Section names of the guide are given in the comments.

Run it with ``python -m wsgi_host`` from the ``examples`` folder (see README.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import smtplib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http import HTTPStatus
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import Markup
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from opencrm_horscompte.base.db import UTCDateTime, make_engine, writer
from opencrm_horscompte.base.emails import email_key
from opencrm_horscompte.hookspecs.host import (
    IdentityDecision,
    MailMessage,
    MenuEntry,
    Request,
    Response,
    Route,
    User,
)
from opencrm_horscompte.host_kit.loader import (
    EnabledHooks,
    PluginRecord,
    call_setup,
    collect_routes,
    load_plugins,
    make_plugin_manager,
    register_plugin,
)

HOST_VERSION = "2.4.0"
SESSION_COOKIE = "exsession"
MAX_BODY = 64 * 1024
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAIL_LEASE = timedelta(minutes=5)

# --------------------------------------------------------------------------- tables

metadata = MetaData()
accounts = Table(
    "ex_account",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False),
    Column("email_key", String(254), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("role", String(20), nullable=False, default="citizen"),
)
demarches = Table(
    "ex_demarche",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("title", String(200), nullable=False),
    Column("open_without_account", Boolean, nullable=False, default=True),
)
dossiers = Table(
    "ex_dossier",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("draft_key", String(64), nullable=False, unique=True),
    Column("demarche_id", Integer, nullable=False),
    Column("demarche_title", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("first_name", String(100), nullable=False),
    Column("last_name", String(100), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("account_id", Integer, nullable=True),
    Column("status", String(20), nullable=False, default="draft"),
    Column("deposited_at", UTCDateTime, nullable=True),
    Column("locale", String(8), nullable=False, default="fr"),
)
# The durable outbox ("Database: the mail outbox"): rows inserted in the caller's transaction.
outbox = Table(
    "ex_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("html", Text, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
)
plugin_state = Table(
    "ex_plugin_state",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("enabled", Boolean, nullable=False),
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemarcheView:
    """What the ``Demarche`` protocol asks for."""

    id: int
    slug: str
    title: str
    open_without_account: bool


@dataclass
class DossierView:
    """What the ``Dossier`` protocol asks for, and a few host fields."""

    id: int
    draft_key: str
    email: str
    demarche_title: str
    account_id: int | None
    deposited_at: datetime | None
    locale: str
    status: str
    message: str


def _dossier(row: Any) -> DossierView:
    return DossierView(
        row.id,
        row.draft_key,
        row.email,
        row.demarche_title,
        row.account_id,
        row.deposited_at,
        row.locale,
        row.status,
        row.message,
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 20_000)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


# --------------------------------------------------------------------------- the host object

TEMPLATES = jinja2.FileSystemLoader(Path(__file__).with_name("templates"))


def utc_now() -> datetime:
    return datetime.now(UTC)


class ExampleHost:
    """Implements the ``Host`` protocol ("The host object")."""

    version = HOST_VERSION

    def __init__(
        self,
        database_url: str,
        secret_keys: Sequence[bytes],
        base_url: str = "http://127.0.0.1:8000",
        clock: Callable[[], datetime] = utc_now,
        extra_plugins: Iterable[tuple[object, str]] = (),
    ) -> None:
        self.engine: Engine = make_engine(database_url)
        self.secret_keys = list(secret_keys)  # newest last
        self.base_url = base_url
        self.clock = clock
        # The host's templates are searched first: our layout replaces the plugin's fallback.
        self.template_loader: jinja2.BaseLoader | None = TEMPLATES
        metadata.create_all(self.engine)
        # "Setting up the plugin manager"
        self.pm = make_plugin_manager()
        self.plugins: list[PluginRecord] = load_plugins(self.pm, HOST_VERSION)
        # "Plugins without an entry point": embedded plugins, after hors-compte.
        for plugin, manifest in extra_plugins:
            self.plugins.append(
                register_plugin(self.pm, plugin, manifest=manifest, host_version=HOST_VERSION)
            )
        self._dispatch = EnabledHooks(self.pm)
        for record in self.plugins:
            if record.registered and record.name not in self.disabled_names():
                call_setup(self.pm, self, record)
        # "Routes and their owner": mounted once, every registered plugin's.
        self.routes = {
            (method, route.path): route
            for route in collect_routes(self.pm, self, self.plugins)
            for method in route.methods
        }

    # ---------------------------------------------------------------- Host protocol

    @property
    def hook(self) -> Any:
        return self._dispatch.relay(self.disabled_names())

    def now(self) -> datetime:
        return self.clock()

    def find_account(self, email: str) -> User | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(accounts).where(accounts.c.email_key == email_key(email))
            ).first()
        return _user(row) if row else None

    def queue_mail(self, session: Session, message: MailMessage) -> None:
        session.execute(
            outbox.insert().values(
                recipient=message.to,
                subject=message.subject,
                text=message.text,
                html=message.html,
                next_attempt_at=self.now(),
                attempts=0,
            )
        )

    def login_url(self, next_url: str) -> str:
        return "/connexion?" + urlencode({"suivant": next_url})

    def dossier_url(self, dossier_id: int) -> str:
        return f"/dossiers/{dossier_id}"

    def absolute_url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def layout_context(self, request: Request) -> Mapping[str, Any]:
        # Prefixed names: the plugin's pages use title, message, values... ("Layout").
        return {"site_name": "Ville d'Exemple", "site_menu": self.menu(request.user)}

    # ---------------------------------------------------------------- plugins

    def disabled_names(self) -> frozenset[str]:
        with self.engine.connect() as connection:
            enabled = {row.name for row in connection.execute(select(plugin_state)) if row.enabled}
        return frozenset(record.name for record in self.plugins if record.name not in enabled)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """The admin's choice, kept in the database so every worker process agrees."""
        record = next(record for record in self.plugins if record.name == name)
        if enabled and not call_setup(self.pm, self, record):
            raise RuntimeError(record.error)
        with writer(self.engine).begin() as connection:
            connection.execute(plugin_state.delete().where(plugin_state.c.name == name))
            connection.execute(plugin_state.insert().values(name=name, enabled=enabled))

    def menu(self, user: User | None) -> list[MenuEntry]:
        entries = [
            entry for found in self.hook.opencrm_admin_menu(host=self, user=user) for entry in found
        ]
        return [entry for entry in entries if _allowed(user, entry.permission)]

    # ---------------------------------------------------------------- seed data

    def add_account(self, email: str, password: str, name: str, role: str = "citizen") -> int:
        with writer(self.engine).begin() as connection:
            return int(
                connection.execute(
                    accounts.insert()
                    .returning(accounts.c.id)
                    .values(
                        email=email,
                        email_key=email_key(email),
                        password_hash=hash_password(password),
                        display_name=name,
                        role=role,
                    )
                ).scalar_one()
            )

    def add_demarche(self, slug: str, title: str, open_without_account: bool = True) -> None:
        with writer(self.engine).begin() as connection:
            connection.execute(
                demarches.insert().values(
                    slug=slug, title=title, open_without_account=open_without_account
                )
            )


def _user(row: Any) -> User:
    roles = frozenset({"admin"}) if row.role == "admin" else frozenset()
    return User(id=row.id, email=row.email, display_name=row.display_name, roles=roles)


def _allowed(user: User | None, permission: str | None) -> bool:
    if permission is None:
        return True
    return user is not None and (permission == "user" or user.is_admin)


# --------------------------------------------------------------------------- mail worker


def claim_due_mails(host: ExampleHost, limit: int = 50) -> list[Any]:
    """Claim due rows in one short transaction ("the mail outbox"): on PostgreSQL with
    ``FOR UPDATE SKIP LOCKED``, so two workers never send the same mail."""
    now = host.now()
    due = (
        select(outbox.c.id)
        .where(outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
    )
    if host.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    with writer(host.engine).begin() as connection:
        ids = list(connection.execute(due).scalars())
        if not ids:
            return []
        connection.execute(
            update(outbox).where(outbox.c.id.in_(ids)).values(next_attempt_at=now + MAIL_LEASE)
        )
        return list(connection.execute(select(outbox).where(outbox.c.id.in_(ids))))


def deliver_mails(host: ExampleHost, smtp_host: str, smtp_port: int, sender: str) -> int:
    """Send the due mails over SMTP, outside any transaction; the number sent."""
    sent = 0
    for row in claim_due_mails(host):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, row.recipient, row.subject
        message.set_content(row.text)
        if row.html is not None:
            message.add_alternative(row.html, subtype="html")
        try:
            with smtplib.SMTP(smtp_host, smtp_port, timeout=10) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            values: dict[str, Any] = {
                "attempts": row.attempts + 1,
                "last_error": str(error)[:500],
                "next_attempt_at": host.now() + timedelta(seconds=30 * 2 ** min(row.attempts, 7)),
            }
        else:
            values = {"sent_at": host.now(), "last_error": None}
            sent += 1
        with host.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.id == row.id).values(**values))
    return sent


def run_scheduled_tasks(host: ExampleHost) -> list[str]:
    """One round of every enabled plugin's ``opencrm_scheduled_tasks`` (a cron calls it);
    the tasks that ran. "A failing task must not stop the others": it is logged, and the
    round goes on."""
    ran = []
    for tasks in host.hook.opencrm_scheduled_tasks(host=host):
        for task in tasks:
            try:
                task.run(host)
            except Exception:
                log.exception("scheduled task %s failed", task.name)
                continue
            ran.append(task.name)
    return ran


# --------------------------------------------------------------------------- the WSGI app

_HOST_PAGES: list[tuple[str, re.Pattern[str]]] = [
    ("home", re.compile(r"^/$")),
    ("identity", re.compile(r"^/demarches/(?P<slug>[\w-]+)/nouveau$")),
    ("form", re.compile(r"^/brouillons/(?P<key>[\w-]+)$")),
    ("receipt", re.compile(r"^/brouillons/(?P<key>[\w-]+)/recu$")),
    ("dossier", re.compile(r"^/dossiers/(?P<id>\d+)$")),
    ("login", re.compile(r"^/connexion$")),
]


class App:
    """The WSGI application: ``App(host)`` is what a WSGI server calls."""

    def __init__(self, host: ExampleHost) -> None:
        self.host = host
        self.pages = jinja2.Environment(
            loader=host.template_loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.sessions = URLSafeSerializer(host.secret_keys, salt="example-host.session")

    # ---------------------------------------------------------------- WSGI <-> contract

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        session = self._load_session(environ)
        before = dict(session)
        request = self._request(environ, session)
        response = self._dispatch(request)
        headers = [(name, value) for name, value in response.headers.items()]
        if dict(session) != before:
            cookie = self.sessions.dumps(dict(session))
            headers.append(
                ("Set-Cookie", f"{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax")
            )
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status, headers)
        return iter([response.body.encode("utf-8")])

    def _load_session(self, environ: dict[str, Any]) -> dict[str, Any]:
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        if SESSION_COOKIE not in cookie:
            return {}
        try:
            loaded = self.sessions.loads(cookie[SESSION_COOKIE].value)
        except BadSignature:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _request(self, environ: dict[str, Any], session: dict[str, Any]) -> Request:
        # "Request": header names as HTTP spells them (any case works: request.header()).
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        form: dict[str, str] = {}
        if environ["REQUEST_METHOD"] in UNSAFE:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
            body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
            form = _first_values(body)  # one value per name: the first
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        account_id = session.get("account_id")
        user = None
        if isinstance(account_id, int):
            with self.host.engine.connect() as connection:
                row = connection.execute(
                    select(accounts).where(accounts.c.id == account_id)
                ).first()
            user = _user(row) if row else None
        locale = "en" if headers.get("Accept-Language", "").startswith("en") else "fr"
        return Request(
            method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace"),
            query=_first_values(environ.get("QUERY_STRING", "")),
            form=form,
            headers=headers,
            # Behind a reverse proxy: the address the trusted proxy reports, not the raw
            # X-Forwarded-For ("Request", client address).
            client_addr=environ.get("REMOTE_ADDR", ""),
            session=session,
            user=user,
            locale=locale,
            csrf_token=session["csrf"],
        )

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, request: Request) -> Response:
        if request.method in UNSAFE:
            sent = request.form.get("csrf_token", "")
            if not hmac.compare_digest(sent.encode(), request.csrf_token.encode()):
                return self._error(request, 400, "Ce formulaire a expiré. Rechargez la page.")
        for name, pattern in _HOST_PAGES:
            match = pattern.match(request.path)
            if match:
                handler: Callable[..., Response] = getattr(self, f"page_{name}")
                return handler(request, **match.groupdict())
        route = self.host.routes.get((request.method, request.path))
        if route is None or route.plugin in self.host.disabled_names():
            return self._error(request, 404, "Cette page n'existe pas.")
        return self._plugin_page(route, request)

    def _plugin_page(self, route: Route, request: Request) -> Response:
        if route.permission is not None and request.user is None:
            return Response.redirect(self.host.login_url(request.path))
        if not _allowed(request.user, route.permission):
            return self._error(request, 403, "Cette page est réservée aux administrateurs.")
        return route.handler(self.host, request)

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        merged = {**self.host.layout_context(request), "request": request, **context}
        return Response.html(self.pages.get_template(name).render(merged), status=status)

    def _error(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, "error.html", status=status, message=message)

    # ---------------------------------------------------------------- host pages

    def page_home(self, request: Request) -> Response:
        with self.host.engine.connect() as connection:
            items = list(connection.execute(select(demarches).order_by(demarches.c.title)))
        return self._render(request, "home.html", items=items)

    def page_identity(self, request: Request, slug: str) -> Response:
        with self.host.engine.connect() as connection:
            row = connection.execute(select(demarches).where(demarches.c.slug == slug)).first()
        if row is None:
            return self._error(request, 404, "Cette démarche n'existe pas.")
        demarche = DemarcheView(row.id, row.slug, row.title, row.open_without_account)
        if not demarche.open_without_account and request.user is None:
            return Response.redirect(self.host.login_url(request.path))
        if request.method != "POST":
            return self._render(request, "identity.html", demarche=demarche)
        identity = {
            k: request.form.get(k, "").strip()[:254] for k in ("email", "first_name", "last_name")
        }
        draft_key = secrets.token_urlsafe(24)
        with writer(self.host.engine).begin() as connection:
            connection.execute(
                dossiers.insert().values(
                    draft_key=draft_key,
                    demarche_id=demarche.id,
                    demarche_title=demarche.title,
                    account_id=request.user.id if request.user else None,
                    locale=request.locale,
                    **identity,
                )
            )
        request.session["drafts"] = [*request.session.get("drafts", [])[-9:], draft_key]
        continue_url = f"/brouillons/{draft_key}"
        # "Identity step": after every identity screen, logged in or not.
        decision: IdentityDecision | None = self.host.hook.opencrm_identity_step(
            host=self.host,
            request=request,
            demarche=demarche,
            identity={**identity, "draft": draft_key, "continue_url": continue_url},
        )
        if decision is not None and decision.action == "propose_login" and decision.response:
            return decision.response
        return Response.redirect(continue_url)

    def _own_draft(self, request: Request, key: str) -> DossierView | None:
        """The depositor only: a draft of this session, or of the logged-in account."""
        with self.host.engine.connect() as connection:
            row = connection.execute(select(dossiers).where(dossiers.c.draft_key == key)).first()
        if row is None:
            return None
        if row.account_id is not None:  # an account's: for that account only
            allowed = request.user is not None and row.account_id == request.user.id
        else:  # nobody's yet: for the browser session that started it
            allowed = key in request.session.get("drafts", [])
        return _dossier(row) if allowed else None

    def page_form(self, request: Request, key: str) -> Response:
        dossier = self._own_draft(request, key)
        if dossier is None:
            return self._error(request, 404, "Ce brouillon n'existe pas.")
        if dossier.status != "draft":
            return Response.redirect(f"/brouillons/{key}/recu")
        if request.method != "POST":
            return self._render(request, "form.html", dossier=dossier)
        # "Deposit and receipt": one writer transaction, opencrm_deposit inside it.
        with Session(writer(self.host.engine)) as session, session.begin():
            row = session.execute(
                select(dossiers).where(dossiers.c.id == dossier.id).with_for_update()
            ).one()
            if row.status != "draft":
                return Response.redirect(f"/brouillons/{key}/recu")
            session.execute(
                update(dossiers)
                .where(dossiers.c.id == dossier.id)
                .values(
                    status="deposited",
                    deposited_at=self.host.now(),
                    message=request.form.get("message", "")[:5000],
                )
            )
            deposited = _dossier(
                session.execute(select(dossiers).where(dossiers.c.id == dossier.id)).one()
            )
            self.host.hook.opencrm_deposit(host=self.host, session=session, dossier=deposited)
        return Response.redirect(f"/brouillons/{key}/recu")

    def page_receipt(self, request: Request, key: str) -> Response:
        dossier = self._own_draft(request, key)
        if dossier is None or dossier.status == "draft":
            return self._error(request, 404, "Ce dossier n'existe pas.")
        found = self.host.hook.opencrm_dossier_receipt(
            host=self.host, request=request, dossier=dossier
        )
        fragments = [Markup(fragment) for fragments in found for fragment in fragments]
        return self._render(request, "receipt.html", dossier=dossier, fragments=fragments)

    def page_dossier(self, request: Request, id: str) -> Response:
        with self.host.engine.connect() as connection:
            row = connection.execute(select(dossiers).where(dossiers.c.id == int(id))).first()
        if row is None or row.status == "draft":
            return self._error(request, 404, "Ce dossier n'existe pas.")
        dossier = _dossier(row)
        owner = request.user is not None and dossier.account_id == request.user.id
        admitted = owner or self.host.hook.opencrm_dossier_access(
            host=self.host, request=request, dossier=dossier
        )
        if not admitted:
            return self._error(request, 403, "Vous n'avez pas accès à ce dossier.")
        return self._render(request, "dossier.html", dossier=dossier)

    def page_login(self, request: Request) -> Response:
        next_url = request.form.get("suivant") or request.query.get("suivant") or "/"
        if not next_url.startswith("/") or next_url.startswith("//"):
            next_url = "/"
        if request.method != "POST":
            return self._render(request, "login.html", next_url=next_url, error=None)
        with self.host.engine.connect() as connection:
            row = connection.execute(
                select(accounts).where(
                    accounts.c.email_key == email_key(request.form.get("email", "")[:254])
                )
            ).first()
        if row is None or not check_password(request.form.get("password", ""), row.password_hash):
            return self._render(
                request,
                "login.html",
                status=400,
                next_url=next_url,
                error="Adresse e-mail ou mot de passe incorrect.",
            )
        # "Identity step": the host attaches this session's drafts to the account, those
        # not deposited yet that belong to nobody (a deposited dossier joins an account by
        # the claim flow), and the session keeps the account's own only.
        drafts = list(request.session.get("drafts", []))
        if drafts:
            with writer(self.host.engine).begin() as connection:
                connection.execute(
                    update(dossiers)
                    .where(
                        dossiers.c.draft_key.in_(drafts),
                        dossiers.c.account_id.is_(None),
                        dossiers.c.status == "draft",
                    )
                    .values(account_id=row.id)
                )
                kept = set(
                    connection.execute(
                        select(dossiers.c.draft_key).where(
                            dossiers.c.draft_key.in_(drafts), dossiers.c.account_id == row.id
                        )
                    ).scalars()
                )
            drafts = [key for key in drafts if key in kept]
        request.session.clear()  # a new session at login (fixation)
        request.session.update(account_id=row.id, drafts=drafts, csrf=secrets.token_urlsafe(32))
        return Response.redirect(next_url)


def _first_values(encoded: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(encoded, keep_blank_values=True).items()}
