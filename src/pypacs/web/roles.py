"""The role each route of the HTTP port needs: one table beside the routes (web/app.py),
read by the authentication middleware (web/http/auth.py) for every request.

A path no row names needs ``reader`` for GET and HEAD and ``admin`` for anything else, so a
route added later is never open by mistake.
"""

from __future__ import annotations

import re

from pypacs.model.access import Role

_READ = frozenset({"GET", "HEAD"})
_ANY = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})

# (path pattern, methods, role needed); None: public. The first row that matches wins.
ROUTE_ROLES: tuple[tuple[re.Pattern[str], frozenset[str], Role | None], ...] = (
    # A liveness probe without patient data or counts (/api/health has counts: reader).
    (re.compile(r"/healthz"), _READ, None),
    # The log-in page and what it loads.
    (re.compile(r"/login|/login\.html|/login\.js|/style\.css"), _READ, None),
    # Logging in and out prove who one is themselves (web/admin/session.py).
    (re.compile(r"/api/session"), frozenset({"POST", "DELETE"}), None),
    # STOW-RS (PS3.18 10.5).
    (re.compile(r"/dicom-web/studies(?:/[^/]+)?"), frozenset({"POST"}), Role.WRITER),
    # Sending to remotes and their jobs; the users.
    (re.compile(r"/api/remotes/[^/]+/(?:echo|move)"), frozenset({"POST"}), Role.ADMIN),
    (re.compile(r"/api/jobs(?:/.*)?"), _ANY, Role.ADMIN),
    (re.compile(r"/api/users(?:/.*)?"), _ANY, Role.ADMIN),
    # Demographics conflicts to review (web/admin/review.py).
    (re.compile(r"/api/conflicts"), _ANY, Role.ADMIN),
)


def role_needed(method: str, path: str) -> Role | None:
    """The role a request needs; None when the route is public."""
    if method == "OPTIONS":  # a CORS preflight carries no credentials (Fetch standard)
        return None
    for pattern, methods, role in ROUTE_ROLES:
        if method in methods and pattern.fullmatch(path):
            return role
    return Role.READER if method in _READ else Role.ADMIN
