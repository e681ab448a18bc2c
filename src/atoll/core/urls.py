"""One check for every http(s) URL a person gives atoll.

Update servers (``atoll remote add URL``, ``--metadata-url``, ``--targets-url``)
and the FleetLock server (``atoll policy set --fleet-lock URL``, the FleetLock
client) are base URLs that atoll appends paths to. :func:`check_http_url`
parses one with :mod:`urllib.parse` and refuses, with an :class:`InputError`
that says why (exit 2), what would only fail later or leak:

* a scheme other than ``http``/``https``, no host, a malformed host
  (``http://[::1``), a port that is not a number from 1 to 65535;
* a query (``?a=b``) or a fragment (``#x``): atoll appends paths, so they would
  end up in the middle of every request URL;
* credentials (``user:pw@``): URLs are stored in world-readable state files and
  printed in output (put a token in a proxy or use TLS client auth instead); the
  error message shows them as ``***@``;
* whitespace and control characters anywhere.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from atoll.core.errors import InputError

__all__ = ["check_http_url"]

_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_EXAMPLE = "e.g. https://updates.example.com/site/"


# user:password@ in the authority: never echoed (the error line may be logged).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)[^/?#@]*@")


def _refuse(what: str, url: str, why: str, example: str = _EXAMPLE) -> InputError:
    shown = _USERINFO.sub(r"\1***@", url)
    return InputError(f"{what} {shown!r}: {why}", resolution=example)


def check_http_url(url: str, what: str = "URL", *, example: str = _EXAMPLE) -> str:
    """``url`` checked as an http(s) base URL, returned ending with ``/``
    (scheme and host as given, lower-cased scheme).

    Args:
        what: how the URL is named in messages (``--metadata-url``, ``FleetLock URL``).
        example: a correct URL of this kind, for the hint.

    Raises:
        InputError: not an http(s) URL with a host, a bad port or host, a query,
            a fragment, credentials, whitespace or control characters.
    """
    if not isinstance(url, str) or not url:
        raise _refuse(what, str(url), "is empty", example)
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise _refuse(what, url, "contains whitespace or control characters", example)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise _refuse(what, url, f"is not a valid URL ({exc})", example) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url[len(scheme) + 1:].startswith("//"):
        raise _refuse(what, url, "is not an http:// or https:// URL", example)
    if "@" in parts.netloc:
        raise _refuse(what, url, "contains credentials (user:password@): URLs are stored "
                      "in world-readable files and shown in output", example)
    if parts.query or "?" in url:
        raise _refuse(what, url, "has a query ('?...'); atoll appends paths to it", example)
    if parts.fragment or "#" in url:
        raise _refuse(what, url, "has a fragment ('#...')", example)
    host = parts.hostname or ""
    if not host:
        raise _refuse(what, url, "has no host", example)
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise _refuse(what, url, f"host [{host}] is not an IPv6 address", example) from None
    elif not _HOST.match(host):
        raise _refuse(what, url, f"host {host!r} is not a host name or IP address", example)
    if port == 0 or parts.netloc.endswith(":"):
        raise _refuse(what, url, "port must be a number from 1 to 65535", example)
    return f"{scheme}:{url[len(scheme) + 1:]}".rstrip("/") + "/"
