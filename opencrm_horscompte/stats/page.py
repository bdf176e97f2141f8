"""``/admin/hors-compte/statistiques``: the chart, the data table, the hints; and the same
figures as CSV (``statistiques.csv``). Admins only; no personal data."""

from __future__ import annotations

import csv
import io

from markupsafe import Markup
from sqlmodel import Session

from opencrm_horscompte.base.i18n import N_, translate
from opencrm_horscompte.base.paths import ADMIN_PATH, STATS_CSV_PATH, STATS_PATH
from opencrm_horscompte.base.rendering import ACCESS_REFUSED, ADMINS_ONLY, message_page, render_page
from opencrm_horscompte.hookspecs.host import Host, Request, Response
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.stats.chart import legend, render_svg
from opencrm_horscompte.stats.counters import METRICS, utc_day
from opencrm_horscompte.stats.report import LABELS, Period, Report, build_report

TEMPLATE = "horscompte/stats.html"
PERIODS: dict[str, Period] = {"jours": "day", "semaines": "week"}


def _period(request: Request) -> tuple[str, Period]:
    name = request.query.get("periode", "jours")
    return (name, PERIODS[name]) if name in PERIODS else ("jours", "day")


def _report(host: Host, period: Period) -> Report:
    with Session(host.engine) as session:
        return build_report(session, period, utc_day(host.now()), load_settings(session))


def _refused(host: Host, request: Request) -> Response | None:
    if request.user is not None and request.user.is_admin:
        return None
    return message_page(host, request, ACCESS_REFUSED, ADMINS_ONLY, 403)


def handle(host: Host, request: Request) -> Response:
    refused = _refused(host, request)
    if refused:
        return refused
    name, period = _period(request)
    report = _report(host, period)
    labels = {metric: translate(LABELS[metric], request.locale) for metric in METRICS}
    title = translate(
        N_("Activité par jour, 30 derniers jours")
        if period == "day"
        else N_("Activité par semaine, 52 dernières semaines"),
        request.locale,
    )
    desc = translate(
        N_(
            "Courbes des recherches, codes envoyés, validations réussies et échouées, et "
            "dépôts ; le tableau qui suit donne tous les chiffres."
        ),
        request.locale,
    )
    body = render_page(
        host,
        request,
        TEMPLATE,
        report=report,
        hints=report.hints,  # at the top of the context, where the page's language applies
        metrics=METRICS,
        labels=labels,
        chart=Markup(render_svg(report, labels, title, desc)),
        legend=legend(labels),
        chart_title=title,
        period_name=name,
        stats_url=STATS_PATH,
        csv_url=f"{STATS_CSV_PATH}?periode={name}",
        admin_url=ADMIN_PATH,
    )
    return Response.html(body)


def handle_csv(host: Host, request: Request) -> Response:
    refused = _refused(host, request)
    if refused:
        return refused
    name, period = _period(request)
    report = _report(host, period)
    out = io.StringIO()
    # For the spreadsheet the admin opens it in: headers as the page's table says them, and
    # in French the separator, the dates and the byte-order mark French Excel expects.
    french = request.locale == "fr"
    writer = csv.writer(out, delimiter=";" if french else ",", lineterminator="\r\n")
    first = N_("Jour") if period == "day" else N_("Semaine du")
    writer.writerow([translate(label, request.locale) for label in (first, *LABELS.values())])
    for bucket in report.buckets:
        start = bucket.start.strftime("%d/%m/%Y") if french else bucket.start.isoformat()
        writer.writerow([start, *(bucket.counts[m] for m in METRICS)])
    filename = f"horscompte-statistiques-{name}.csv"
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return Response(status=200, body="\ufeff" + out.getvalue(), headers=headers)
