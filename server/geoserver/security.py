"""Who may do what (docs/security.md): password checks in constant time, and which HTTP
requests may run which commands. Pure functions; the connection code acts on the answers."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

_CROSS_SITE = ("cross-site", "same-site")


def password_matches(given: str | bytes, required: str) -> bool:
    """A set password compared in constant time (no timing oracle on its prefix)."""
    if not required:
        return False
    given_bytes = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
    return hmac.compare_digest(given_bytes, required.encode("utf-8", "surrogateescape"))


def origin_allowed(origin: str, allowed: str) -> bool:
    """`cors-origins` is a comma-separated list of origins, or `*` for any."""
    names = {o.strip() for o in allowed.split(",") if o.strip()}
    return "*" in names or origin in names


def cross_site(headers: Mapping[str, str], allowed: str) -> bool:
    """A request a browser sent for another site's page: an Origin that is not allowed, or
    Sec-Fetch-Site saying so (browsers send it even on the GETs of <img> and links)."""
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, allowed):
        return True
    return origin is None and headers.get("sec-fetch-site", "").lower() in _CROSS_SITE


def http_refusal(method: str, write: bool, admin: bool, headers: Mapping[str, str],
                 allowed: str) -> tuple[int, str]:
    """(status, error) when an HTTP request may not run its command, else (0, "").

    Admin commands (CONFIG, FOLLOW, AOFSHRINK, FLUSHDB, ...) need POST: a GET can be sent by any
    page the user opens. Writes and admin commands from another site's page are refused; reads
    run, and without a CORS header for that origin the page cannot read the reply."""
    if admin and method not in ("POST", "PUT"):
        return 405, "admin commands over HTTP need POST"
    if (write or admin) and cross_site(headers, allowed):
        return 403, "cross-site requests may not run write or admin commands"
    return 0, ""
