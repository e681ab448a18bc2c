"""The control plane's HTTP errors: one JSON shape for every failure.

    {"error": "InputError" | "HostStateError" | "RuntimeBackendError" | "AtollError",
     "kind": "not_found" | "unauthorized" | ..., "brief": str,
     "details": str | null, "resolution": str | null}

``error`` is the atoll error class the CLI raises for it (its exit code); ``kind``
is stable for programs (docs/control-plane.md lists them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "conflict", "forbidden", "not_found", "unauthorized"]

_CLASS = {400: "InputError", 401: "InputError", 403: "InputError", 404: "InputError",
          405: "InputError", 408: "InputError", 409: "HostStateError", 413: "InputError",
          415: "InputError", 422: "InputError", 503: "RuntimeBackendError"}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, brief: str, *, details: str | None = None,
                 resolution: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(brief)
        self.status = status
        self.kind = kind
        self.brief = brief
        self.details = details
        self.resolution = resolution
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": _CLASS.get(self.status, "AtollError"), "kind": self.kind,
                "brief": self.brief, "details": self.details, "resolution": self.resolution}


def unauthorized(brief: str, resolution: str | None = None) -> ApiError:
    return ApiError(401, "unauthorized", brief, resolution=resolution,
                    headers={"WWW-Authenticate": "Bearer"})


def forbidden(brief: str, resolution: str | None = None) -> ApiError:
    return ApiError(403, "forbidden", brief, resolution=resolution)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def conflict(brief: str, resolution: str | None = None) -> ApiError:
    return ApiError(409, "conflict", brief, resolution=resolution)
