"""The host contract: what an Open CRM host calls, and what it offers its plugins.

A host creates ``pluggy.PluginManager("opencrm")``, adds these specs, calls
``opencrm_add_hookspecs`` historically, then registers its plugins. Every hook below is
called by the host, never by a plugin, except where a docstring says otherwise.

The plugin core never imports a web framework: pages are handlers over the small frozen
:class:`Request` / :class:`Response` dataclasses below, and a host adapts its framework to
them in a dozen lines (the reference host does it in
``opencrm_horscompte.host_kit.refhost.adapter``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    import jinja2
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from opencrm_horscompte.base.db import DriverConnection

PROJECT = "opencrm"
ADMIN_SECTION = "Administration"
PUBLIC_SECTION = "Public"
AGENT_SECTION = "Agents"
ACCOUNT_SECTION = "Mon espace"
AGENT_ROLE = "agent"
ADMIN_ROLE = "admin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

HEADER_FORBIDDEN = ("\r", "\n", "\x00")

# Defaults of the optional Host attributes (see :class:`Host`).
DEFAULT_TIMEZONE = "Europe/Paris"
DEFAULT_SERVICE_NAME = "Votre mairie"
DEFAULT_SERVICE_CONTACT = ""


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class User:
    """The logged-in person, as the host knows them.

    ``roles`` a host may give: ``"admin"`` (functional administrator: everything) and
    ``"agent"`` (town-hall staff who instruct dossiers and help citizens on the phone).
    Any other role is the host's own business; a citizen has none.
    """

    id: int
    email: str
    display_name: str
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def is_agent(self) -> bool:
        """An agent, or an admin (who may do whatever an agent does)."""
        return AGENT_ROLE in self.roles or self.is_admin


@dataclass(frozen=True)
class Request:
    """One HTTP request, framework-free.

    ``query`` and ``form`` hold one value per name (the first, when a name repeats: the
    plugin's forms never repeat one). ``headers`` may use any case for its keys (WSGI,
    ASGI and frameworks differ): read them with :meth:`header`. ``client_addr`` is the
    client's address as the host trusts it (behind a proxy: the address the trusted proxy
    reports, not the raw ``X-Forwarded-For``); the plugin's throttles count per address.
    ``session`` is the host's signed session mapping (writes persist with the response).
    ``csrf_token`` is the token the host expects in the ``csrf_token`` field of any unsafe
    request: the host rejects a POST whose token does not match *before* calling a handler,
    so handlers only have to render it in their forms.

    ``client_addr`` is the address of the client itself, as the host's rate limits need it:
    the TCP peer, or, behind reverse proxies the host trusts, the client address they
    forwarded (the host resolves ``X-Forwarded-For`` with a fixed number of trusted hops;
    never the raw header, which any client can forge). Empty when unknown.
    """

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    client_addr: str = ""
    session: MutableMapping[str, Any] = field(default_factory=dict)
    user: User | None = None
    locale: str = "fr"
    csrf_token: str = ""

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name``, whatever the case of the host's keys."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default


@dataclass(frozen=True)
class Response:
    """What a handler returns: status, HTML body, extra headers."""

    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def html(cls, body: str, status: int = 200) -> Response:
        return cls(status=status, body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status=status, headers={"Location": location})


Handler = Callable[["Host", Request], Response]
Permission = Literal["user", "agent", "admin"]


@dataclass(frozen=True)
class Route:
    """A page a plugin serves. ``permission`` is enforced by the host before dispatch:
    ``None`` (anyone), ``"user"`` (any logged-in user), ``"agent"`` (:attr:`User.is_agent`:
    an agent or an admin) or ``"admin"``.

    ``plugin`` is the name of the plugin that serves the route (its registered name, which
    the loader makes the entry point's name). A plugin may leave it ``None``: a host
    collects routes with :func:`opencrm_horscompte.host_kit.loader.collect_routes`, which
    fills it in from the hook implementation, so that a request to a disabled plugin's
    route can answer 404 without asking pluggy.
    """

    methods: tuple[str, ...]
    path: str
    handler: Handler
    permission: Permission | None = None
    plugin: str | None = None


@dataclass(frozen=True)
class MenuEntry:
    """An entry of the host's menus, e.g. section "Administration", label "Hors-compte".

    Sections a host knows: ``"Administration"`` (its admin menu), ``"Public"`` (links
    for every visitor, such as "Suivre un dossier", shown in the site header), ``"Agents"``
    (links for agents and admins, in the site header) and ``"Mon espace"`` (links on a
    logged-in citizen's own page, such as "Rattacher un dossier"). ``label`` is French; a
    host with an English interface translates it with the plugin's catalog.
    """

    section: str
    label: str
    url: str
    permission: Permission | None = "admin"


@dataclass(frozen=True)
class DossierAction:
    """A link a plugin adds to the host's page of one dossier (``opencrm_dossier_actions``),
    e.g. "Assistance usagers" for agents. ``label`` is French (translated like a
    :class:`MenuEntry`); the host shows it only to users holding ``permission``."""

    label: str
    url: str
    permission: Permission | None = "agent"


@dataclass(frozen=True)
class MailMessage:
    """A mail to queue in the host's durable outbox. Header fields refuse CR, LF and NUL.

    Optional delivery hints (a host may ignore them; older hosts do):

    - ``useless_after``: past this moment (aware) the mail can no longer serve (the
      validation code it carries has expired): the host drops it, never delivers it late;
    - ``replaces``: a key; a newer mail with the same key makes the older undelivered ones
      useless, and the outbox drops them rather than deliver them (the reference host does
      it in its worker; a resent validation code replaces the older one).
    """

    to: str
    subject: str
    text: str
    html: str | None = None
    useless_after: datetime | None = None
    replaces: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("to", self.to), ("subject", self.subject)):
            if any(map(value.__contains__, HEADER_FORBIDDEN)):
                raise ValueError(f"mail header {name!r} contains CR, LF or NUL")


@dataclass(frozen=True)
class MailTemplate:
    """A mail layout an admin can choose (e.g. for "Courriel de validation").

    ``key`` is stable and stored in settings; ``subject`` / ``text`` / ``html`` are Jinja2
    template names resolved through the plugin's template loader (host templates first).
    """

    key: str
    label: str
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class IdentityDecision:
    """What the identity step decided for a new dossier's first screen.

    ``action`` is ``"continue"`` (go on to the form) or ``"propose_login"`` (send
    ``response`` as it is: since 0.3 a redirect to the plugin's page that offers to log in
    or to go on without an account, ``GET /hors-compte/identite``).
    """

    action: Literal["continue", "propose_login"] = "continue"
    response: Response | None = None


@dataclass(frozen=True)
class ScheduledTask:
    """A periodic job: ``run(host)`` is called about every ``every_seconds``."""

    name: str
    every_seconds: int
    run: Callable[[Host], object]


@runtime_checkable
class Dossier(Protocol):
    """What a plugin may read of a host's dossier."""

    id: int
    email: str
    demarche_title: str
    account_id: int | None
    deposited_at: datetime | None
    locale: str  # the citizen's language when filing ("fr", "en"): their mails use it


@runtime_checkable
class Demarche(Protocol):
    """What a plugin may read of a host's online procedure."""

    id: int
    slug: str
    title: str
    open_without_account: bool


class Host(Protocol):
    """The object passed as ``host`` to every hook.

    ``engine``: the SQLAlchemy engine of the host's database (plugins create their own
    tables there, prefixed with their name). ``hook``: the plugin manager's hook relay,
    already filtered to the enabled plugins. ``now()``: the host clock, timezone-aware UTC
    (tests move it). ``secret_keys``: signing keys, newest last, for rotation.
    ``template_loader``: the host's Jinja2 templates, searched before the plugin's; it
    provides ``opencrm/layout.html`` (blocks ``title`` and ``main``) that plugin pages extend.

    Optional attributes (since 0.2; a plugin reads them with ``getattr`` and the defaults
    below, so a host written against the earlier contract keeps working):

    ``timezone``
        IANA name of the time zone in which dates and times are shown to people, in pages
        and mails (storage stays UTC). Default :data:`DEFAULT_TIMEZONE`, ``"Europe/Paris"``:
        the plugin serves French public services; an overseas host sets its own
        (``"America/Cayenne"``, ``"Indian/Reunion"``...). An unknown name means the default.
    ``service_name``
        The service that signs the mails, e.g. ``"Mairie de Démoville"``. Default
        :data:`DEFAULT_SERVICE_NAME`.
    ``service_contact``
        One line telling how to reach that service (phone, opening hours, address of a
        contact page), added to the mails' signature. Default: empty (no contact line).

    The mail sender, with its display name (``"Mairie de Démoville
    <ne-pas-repondre@...>"``), is the host's business: its outbox sets ``From``.
    """

    # Read-only for plugins: a plain attribute of the host's class satisfies each property.
    @property
    def version(self) -> str: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def secret_keys(self) -> Sequence[bytes]: ...

    @property
    def template_loader(self) -> jinja2.BaseLoader | None: ...

    @property
    def hook(self) -> Any: ...

    def now(self) -> datetime: ...

    def find_account(self, email: str) -> User | None:
        """The account whose email matches ``email`` (already normalised), or None."""
        ...

    def queue_mail(self, session: Session, message: MailMessage) -> None:
        """Add ``message`` to the durable outbox inside ``session``'s transaction (never send
        inline). The host's worker delivers it later; on PostgreSQL it claims rows with
        ``SELECT ... FOR UPDATE SKIP LOCKED``, or two workers send the same mail twice."""
        ...

    def login_url(self, next_url: str) -> str:
        """Where to send a visitor to log in and come back to ``next_url``."""
        ...

    def dossier_url(self, dossier_id: int) -> str:
        """The same-site path of the host's page for one dossier (it asks
        ``opencrm_dossier_access`` before showing it to a visitor without login)."""
        ...

    def absolute_url(self, path: str) -> str:
        """``path`` made absolute with the host's public base URL (for mails)."""
        ...

    def layout_context(self, request: Request) -> Mapping[str, Any]:
        """Variables the host's ``opencrm/layout.html`` needs (menus, site name...); a
        plugin merges them into the context of the pages it renders, under its own
        variables: prefix yours (``site_name``, ``site_menu``) so they don't clash with the
        names docs/integrating.md lists under "Layout"."""
        ...


@runtime_checkable
class AttachingHost(Protocol):
    """An OPTIONAL part of the host contract: a host that can attach a dossier deposited
    without an account to an account. Plugins look for it with
    ``getattr(host, "attach_dossier", None)``; a host without it simply doesn't get the
    "Rattacher un dossier" page (the plugin offers neither the menu entry nor the route)."""

    def attach_dossier(self, dossier_id: int, user: User) -> bool:
        """Attach deposited dossier ``dossier_id`` to ``user``'s account, atomically and
        only if it belongs to no account yet.

        :return: True if it is now attached to ``user``; False if it already belonged to an
            account (this one or another), is unknown or is not deposited: nothing changed.
        """
        ...


@runtime_checkable
class ConnectionMailHost(Protocol):
    """An OPTIONAL part of the host contract (since 0.2): queuing a mail on a driver-level
    connection, for the plugin's hot paths that write without an ORM session. Plugins look
    for it with ``getattr(host, "queue_mail_on_connection", None)``; without it the lookup
    opens a session and calls ``queue_mail``, as before (about 0.1 ms more per lookup)."""

    def queue_mail_on_connection(self, connection: DriverConnection, message: MailMessage) -> None:
        """What ``queue_mail`` does, on ``connection`` (an
        :class:`opencrm_horscompte.base.db.DriverConnection`) inside the caller's write
        transaction: add the row with a ``DriverStatement``, or with one statement on a
        cursor of ``connection.dbapi_connection`` (the driver's PEP 249 connection). Never
        commit, roll back or close it; the caller does."""
        ...


# --------------------------------------------------------------------------- hook specs


@hookspec(historic=True)
def opencrm_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications to the host's plugin manager.

    :param pluginmanager: the host's ``pluggy.PluginManager("opencrm")``.
    :return: nothing.

    Historic: a plugin registered after the host made the call still receives it, the same
    pattern as pytest's ``pytest_addhooks``. Not firstresult.
    """


@hookspec
def opencrm_plugin_setup(host: Host) -> None:
    """Create or upgrade the plugin's tables and check that the host suits it.

    :param host: the host (see :class:`Host`); ``host.engine`` is the database.
    :return: nothing. Raise to refuse the host; the host records the error on its plugin
        page and leaves the plugin disabled.

    Called once per process after registration, and again when an admin enables the
    plugin. Must be idempotent, and safe when N worker processes start at once (the plugin
    runs its Alembic migrations under a database lock). Not firstresult.
    """


@hookspec
def opencrm_admin_menu(host: Host, user: User | None) -> list[MenuEntry]:
    """Menu entries a plugin adds to the host's menus.

    :param host: the host.
    :param user: the logged-in user, or None.
    :return: a list of :class:`MenuEntry`; the host shows those whose ``permission`` the
        user holds, grouped by ``section``.

    Not firstresult: every plugin's entries are collected.
    """


@hookspec
def opencrm_routes(host: Host) -> list[Route]:
    """Pages a plugin serves.

    :param host: the host.
    :return: a list of :class:`Route`. The host checks ``permission`` and the CSRF token of
        unsafe methods, then calls ``handler(host, request)`` and sends its
        :class:`Response`. A disabled plugin's routes answer 404: collect them with
        ``host_kit.loader.collect_routes``, which sets each route's ``plugin`` (its owner).

    Not firstresult: every plugin's routes are collected.
    """


@hookspec(firstresult=True)
def opencrm_identity_step(
    host: Host, request: Request, demarche: Demarche, identity: Mapping[str, str]
) -> IdentityDecision | None:
    """Decide what follows a new dossier's first screen (the identity screen).

    :param host: the host.
    :param request: the request that submitted the identity screen.
    :param demarche: the online procedure being started.
    :param identity: what the citizen typed (``email``, ``first_name``, ``last_name``),
        plus ``draft``, the host's reference to the draft dossier, and ``continue_url``, the
        same-site path where the draft continues (the form's next screen). Optional (since
        0.2): ``step`` and ``steps``, the identity screen's place in the démarche ("1", "3"),
        shown on the proposal as "Étape 1 sur 3"; without them no step is shown.
    :return: an :class:`IdentityDecision`, or None to let the host continue.

    Call it after every new dossier's identity screen, for logged-in users and for
    démarches not open without an account too (the hors-compte plugin returns None for
    them). After "Me connecter et continuer", the *host* attaches the session's drafts to
    the account at login; the account's email need not match the draft's.

    firstresult: the first non-None decision wins.
    """


@hookspec
def opencrm_deposit_prepare(host: Host, dossier: Dossier) -> None:
    """Prepare a dossier's deposit before the host opens its deposit transaction (optional).

    :param host: the host.
    :param dossier: the draft about to be deposited, as the host holds it (it has an id).
    :return: nothing.

    Called outside any transaction, just before the host opens the deposit transaction in
    which it calls :func:`opencrm_deposit` for the same dossier. A plugin does its slow,
    database-free work here (rendering mails, drawing codes, signing), so that the write
    transaction (on SQLite, one lock for the whole host) stays short; it keeps the result
    for its ``opencrm_deposit`` call and must check there that the dossier it now sees
    matches (the draft may have changed in between). Optional for hosts: a host that never
    calls it deposits just the same, plugins then do that work inside ``opencrm_deposit``.
    Work prepared for a deposit that then fails or never happens is dropped.

    Not firstresult: every enabled plugin prepares.
    """


@hookspec
def opencrm_deposit(host: Host, session: Session, dossier: Dossier) -> None:
    """Take part in a dossier's deposit, inside the host's deposit transaction.

    :param host: the host.
    :param session: the SQLAlchemy session whose transaction deposits the dossier. Work done
        here commits with the dossier or not at all; raise to make the deposit fail (the host
        rolls back and keeps the draft).
    :param dossier: the dossier being deposited (already flushed, so it has an id).
    :return: nothing.

    A dossier owned by an account (``dossier.account_id`` set) is followed from that
    account's space: the hors-compte plugin gives it no tracking code, so the lookup by
    tracking code never finds it, and its acknowledgment mail and receipt point to
    ``host.dossier_url`` ("Mon espace") instead. Call the hook for every deposit all the same.

    Keep this work short: on SQLite the write transaction locks every other writer out. A
    host may call :func:`opencrm_deposit_prepare` first so plugins do the slow part outside.

    Not firstresult: every enabled plugin takes part.
    """


@hookspec
def opencrm_dossier_receipt(host: Host, request: Request, dossier: Dossier) -> list[str]:
    """HTML fragments for a deposited dossier's receipt page.

    :param host: the host.
    :param request: the request showing the receipt (the depositor's session).
    :param dossier: the deposited dossier.
    :return: a list of HTML fragments (already escaped, safe to insert).

    A fragment may hold a secret meant for the depositor only. The hors-compte plugin shows
    the tracking code only to the browser session that deposited: the first receipt view
    within minutes of the deposit stores a proof in ``request.session`` (and its hash in
    the database), and later views show the code only to a session holding that proof;
    any other request gets the fragment without the code. A host should still restrict its
    receipt page to the depositor, and must show it first from the depositing session.

    Not firstresult: every plugin's fragments are shown, in hook order.
    """


@hookspec(firstresult=True)
def opencrm_dossier_access(host: Host, request: Request, dossier: Dossier) -> bool | None:
    """May this request, without a login, see this dossier?

    :param host: the host.
    :param request: the request asking for the dossier page.
    :param dossier: the dossier asked for.
    :return: True to admit, False to refuse, None when the plugin has no opinion.

    firstresult: the first non-None answer wins; no answer means refuse.
    """


@hookspec
def opencrm_dossier_actions(host: Host, request: Request, dossier: Dossier) -> list[DossierAction]:
    """Links a plugin adds to the host's page of one deposited dossier (for its staff).

    :param host: the host.
    :param request: the request showing the dossier page (``request.user`` is the viewer).
    :param dossier: the dossier shown.
    :return: a list of :class:`DossierAction`; the host shows those whose ``permission``
        the viewer holds (by default agents and admins), in hook order.

    Not firstresult: every plugin's actions are collected.
    """


@hookspec
def opencrm_mail_templates(host: Host) -> list[MailTemplate]:
    """Mail templates a plugin contributes (the "Courriel de validation" select lists them).

    :param host: the host.
    :return: a list of :class:`MailTemplate`.

    Not firstresult: every plugin's templates are collected.
    """


@hookspec
def opencrm_scheduled_tasks(host: Host) -> list[ScheduledTask]:
    """Periodic jobs a plugin needs (purging expired codes, ...).

    :param host: the host.
    :return: a list of :class:`ScheduledTask`; the host runs each about every
        ``every_seconds`` in one of its workers.

    Not firstresult: every plugin's tasks are collected.
    """
