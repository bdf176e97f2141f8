"""Flask <-> contract: turn Flask's request into a ``Request`` and a ``Response`` back."""

from __future__ import annotations

import flask

from opencrm_horscompte.hookspecs.host import Request, Response, User


def to_request(
    user: User | None, csrf_token: str, locale: str, *, with_form: bool = True
) -> Request:
    """The contract's request; ``with_form=False`` never reads the body (error pages: the
    body may be what failed, e.g. too large)."""
    request = flask.request
    return Request(
        method=request.method,
        path=request.path,
        query=request.args.to_dict(),
        form=request.form.to_dict() if with_form else {},
        headers=dict(request.headers),
        client_addr=request.remote_addr or "",
        session=flask.session,
        user=user,
        locale=locale,
        csrf_token=csrf_token,
    )


def to_flask(response: Response) -> flask.Response:
    result = flask.Response(response.body, status=response.status)
    for name, value in response.headers.items():
        result.headers[name] = value
    return result
