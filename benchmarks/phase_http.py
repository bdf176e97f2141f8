"""The lookup through the reference host's Flask app over a trivial POST: the lookup's POST
and the GET of the code entry page it redirects to (post/redirect/get), the page the
citizen gets for the request, as before the redirect."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, interleaved
from figures import RUNS, paired, ratio_figure, repeated
from lookup_targets import draw_once, fresh_client, targets_of
from sizes import Sizes

from opencrm_horscompte.base.paths import LOOKUP_PATH, VALIDATE_PATH
from opencrm_horscompte.tracking.codes import format_tracking_code


def bench_http(sizes: Sizes, small_path: Path) -> dict[str, Any]:
    import flask
    from werkzeug.test import EnvironBuilder

    from opencrm_horscompte.host_kit.refhost.app import create_app

    host = benchlib.build_host(benchlib.sqlite_url(small_path))
    app = create_app(host)

    @app.post("/benchmark/bare")
    def bare() -> flask.Response:
        flask.request.form.get("email", "")
        return flask.Response("ok", content_type="text/plain; charset=utf-8")

    client = app.test_client()
    with client.session_transaction() as session:
        session["csrf"] = "benchmark-csrf-token"
    cookie = client.get_cookie("session")
    assert cookie is not None
    rng = random.Random(17)
    # Three requests per iteration draw one (the POST with its page, the POST alone, the
    # bare POST's form), none a target looked up before: a repeat within the plugin's
    # REPEAT_WINDOW keeps its code and mails nothing, which is less work than a lookup.
    next_target = draw_once(targets_of(small_path, 3 * RUNS * sizes.http_iterations + 10, rng))
    statuses: dict[str, dict[int, int]] = {"lookup": {}, "bare": {}}

    def environ(path: str) -> dict[str, Any]:
        target = next_target()
        builder = EnvironBuilder(
            path=path,
            method="POST",
            data={
                "email": target.email,
                "tracking_code": format_tracking_code(target.code),
                "csrf_token": "benchmark-csrf-token",
            },
            headers=[("Cookie", f"session={cookie.value}")],
            environ_base={"REMOTE_ADDR": fresh_client()},
        )
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def page_environ(path: str, cookie: str) -> dict[str, Any]:
        builder = EnvironBuilder(path=path, method="GET", headers=[("Cookie", cookie)])
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def respond(env: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
        answer: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            answer.append((line, headers))
            return lambda data: None

        body = app(env, start_response)
        try:
            b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
        line, headers = answer[0]
        return int(line.split()[0]), headers

    def call(name: str, env: dict[str, Any]) -> int:
        code, headers = respond(env)
        if name == "lookup" and code == 303:  # the page it leads to, in the same figure
            cookie = next(value for key, value in headers if key == "Set-Cookie")
            code, _ = respond(page_environ(VALIDATE_PATH, cookie.split(";")[0]))
        statuses.setdefault(name, {})
        statuses[name][code] = statuses[name].get(code, 0) + 1
        return code

    try:
        for _ in range(5):
            call("lookup", environ(LOOKUP_PATH))
            call("bare", environ("/benchmark/bare"))
        statuses = {"lookup": {}, "bare": {}}
        operations = [
            Operation("lookup", call, lambda _i: ("lookup", environ(LOOKUP_PATH))),
            Operation("lookup_post", call, lambda _i: ("lookup_post", environ(LOOKUP_PATH))),
            Operation("bare", call, lambda _i: ("bare", environ("/benchmark/bare"))),
        ]
        per_run, load_done = repeated(
            "http", lambda: interleaved(operations, sizes.http_iterations, rng)
        )
    finally:
        host.engine.dispose()
    figure = ratio_figure(paired(per_run, "lookup", "bare"), load_done)
    post_only = ratio_figure(paired(per_run, "lookup_post", "bare"), load_done)
    figures = {"http_lookup_cpu_vs_bare": figure, "http_lookup_post_cpu_vs_bare": post_only}
    return {"figures": figures, "statuses": statuses}
