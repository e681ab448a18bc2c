"""The fleet web console (issue 17): server-rendered pages over the control plane's
stored reports, mounted at ``/console`` by :func:`atoll.control.app.build_app`.

    models   console_users, console_sessions (migration 0004_console)
    users    argon2 passwords, sessions, CSRF tokens, the login rate limit
    views    what the pages show (pure queries through the API's authorization)
    rollout_views  the Rollouts and Releases pages, the Host page's package changes
    web      the Starlette application: routes, templates, security headers

docs/console.md says what exists, what does not yet, and the security model.
"""

from __future__ import annotations

__all__ = ["CONSOLE"]

CONSOLE = "/console"  # where build_app mounts it
