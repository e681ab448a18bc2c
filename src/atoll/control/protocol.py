"""The check-in protocol between atolld and the control plane (pure; docs/control-plane.md).

Shared by both sides: the agent builds and signs what the server validates. Nothing
here touches a database or the network.

Enrolment (once per host)::

    POST /v1/enrol      Authorization: Bearer <enrol token>     EnrolRequest -> Enrolled

Check-in (every interval)::

    POST /v1/checkin    Content-Type: application/json
                        Atoll-Signature: host=<host id>;ed25519=<base64 signature>
                        body: CheckIn as canonical JSON (what is signed: the bytes sent)
                        -> Directive

The signature is Ed25519 over ``SIGNING_CONTEXT + body`` (the exact bytes of the
body; the server verifies them, with the key of the host the header names, before it
parses anything; the body's ``host_id`` must be that host). The host's key is made on
the host and never leaves it; the server keeps the public key from enrolment. Each
check-in carries a ``counter`` larger than the last one the server accepted: a
replayed or reordered check-in is refused (409), so is one signed by another key.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "API_VERSION",
    "CVE_ID",
    "MAX_CHECKIN_BYTES",
    "MAX_MANIFEST_PACKAGES",
    "SIGNATURE_HEADER",
    "SIGNING_CONTEXT",
    "AppReport",
    "CheckIn",
    "CveFacts",
    "Directive",
    "EnrolRequest",
    "Enrolled",
    "HostStatusDoc",
    "Package",
    "RequestResult",
    "Target",
    "b64decode",
    "b64encode",
    "json_schemas",
    "manifest_digest",
    "parse_signature",
    "sign",
    "verify",
]

API_VERSION: Literal["atoll/v1"] = "atoll/v1"
SIGNATURE_HEADER = "Atoll-Signature"
SIGNING_CONTEXT = b"atoll-checkin-v1\n"
MAX_CHECKIN_BYTES = 2 * 1024 * 1024  # a whole check-in, manifest included: 413 beyond
MAX_MANIFEST_PACKAGES = 20_000
MAX_COUNTER = 2**63 - 1  # BIGINT
Step = Literal["download", "prepare", "apply"]
STEPS: tuple[Step, ...] = ("download", "prepare", "apply")

Name = Annotated[str, StringConstraints(min_length=1, max_length=63,
                                        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]
Text = Annotated[str, StringConstraints(max_length=1000)]
Short = Annotated[str, StringConstraints(max_length=200)]
Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
HostId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f-]{36}$")]


class _Strict(BaseModel):
    """Unknown fields are errors (a typo is not silently dropped)."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """An ``atoll/v1`` document: new fields may appear within v1 (docs/status.schema.json),
    so unknown ones are kept; the fields the control plane reads are typed and bounded."""

    model_config = ConfigDict(extra="allow")


# -- enrolment ---------------------------------------------------------------


class EnrolRequest(_Strict):
    name: Name = Field(description="the host's name (its hostname), unique in its customer")
    machine_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        None, description="/etc/machine-id")
    public_key: Annotated[str, StringConstraints(min_length=44, max_length=44)] = Field(
        description="the host's Ed25519 public key: 32 raw bytes, base64")


class Enrolled(_Strict):
    host_id: HostId
    name: Name
    customer: Name


# -- check-in ----------------------------------------------------------------


class Deployment(_Open):
    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}\.[0-9]+$")]
    commit: Commit
    version: Short | None = None
    role: Short | None = None
    pinned: bool = False


class LastBoot(_Open):
    result: Literal["good", "rolled-back", "failed", "unknown"]
    reason: Text = ""
    time: Short | None = None
    deployment: Short | None = None
    acknowledged: bool = True
    checks: list[dict[str, Any]] = Field(default_factory=list, max_length=100)


class Update(_Open):
    state: Literal["up-to-date", "available", "downloaded", "prepared", "pending"]
    version: Short | None = None
    commit: Short | None = None
    remote: Short | None = None
    channel: Short | None = None


class Backup(_Open):
    app: Short
    last: Short | None = None


class HostStatusDoc(_Open):
    """The ``atoll/v1 HostStatus`` document (``atoll status --json``), as the host wrote it."""

    apiVersion: Literal["atoll/v1"]
    kind: Literal["HostStatus"]
    deployments: list[Deployment] = Field(max_length=64)
    booted: Deployment | None
    pending: Deployment | None
    rollback: Deployment | None
    prepared: Deployment | None = None
    last_boot: LastBoot | None
    rollback_events: int = Field(ge=0)
    update: Update | None
    backups: list[Backup] = Field(default_factory=list, max_length=100)


class ContainerReport(_Strict):
    state: Short | None = Field(None, description="docker's: running, exited, ...")
    health: Short | None = Field(None, description="healthy, unhealthy, starting, or null")
    started_at: Short | None = None


class DatabaseReport(_Strict):
    role: Literal["primary", "replica", "none", "unknown"]
    lag_s: float | None = Field(None, ge=0, description="seconds behind the source (replica)")
    io_running: bool | None = None
    sql_running: bool | None = None


class AppReport(_Strict):
    name: Name
    image: Short | None = None
    role: Short | None = None
    container: ContainerReport | None = None
    database: DatabaseReport | None = None
    error: Text | None = Field(None, description="what could not be read, and why")


class Package(_Strict):
    name: Short
    version: Short
    architecture: Short | None = None
    source: Short | None = None
    source_version: Short | None = None


Urgency = Literal["unimportant", "low", "medium", "high", "not yet assigned"]
MAX_CVE_COUNT = 10_000_000  # per urgency: the tracker knows some 300,000 CVEs in all
CveCounts = dict[Urgency, Annotated[int, Field(ge=0, le=MAX_CVE_COUNT)]]
MAX_OPEN_CVES = 5000  # ids sent per check-in (highest urgency first): ~400 KB at most
# a tracker id (CVE-2023-44487, TEMP-0000000-ABCDEF): ASCII letters, digits and ._:-
# only, so no markup, whitespace or control character reaches a page or a terminal
CVE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$"


class OpenCve(_Strict):
    cve: Annotated[str, StringConstraints(pattern=CVE_ID)]
    urgency: Short | None = Field(None, description="the tracker's word, as published")
    source: Short | None = None
    fixed_version: Short | None = Field(None, description="null: no fix in the release yet")


class UpdateCves(_Open):
    commit: Short | None = None
    state: Short | None = None
    version: Short | None = None
    source: Literal["tracker", "changelog", "none"] = Field(
        description="tracker: the update's signed CVE report has tracker data; changelog: "
        "its fixes come from Debian changelogs only; none: no report kept")
    fixes: CveCounts | None = Field(None, description="CVEs the update fixes, per urgency")
    fixes_total: int | None = Field(None, ge=0, le=MAX_CVE_COUNT)


class CveFacts(_Open):
    """The booted deployment's CVEs as its signed CVE report says (docs/security.md);
    optional in a check-in (agents before it send none)."""

    commit: Short | None = None
    source: Literal["tracker", "changelog", "none"] = Field(
        description="tracker: open CVEs from the tracker's data published with the image; "
        "changelog: the report has changelog facts only (open CVEs unknown); none: no "
        "report kept for the booted commit")
    generated: Short | None = Field(None, description="when the report was computed (UTC)")
    expires: Short | None = Field(None, description="after this the data is stale")
    age_seconds: int | None = None
    stale: bool | None = None
    open: CveCounts | None = Field(None, description="open CVEs per urgency (the tracker's "
                                   "words; null: unknown)")
    open_cves: list[OpenCve] = Field(default_factory=list, max_length=MAX_OPEN_CVES)
    open_cves_truncated: bool = False
    update: UpdateCves | None = None
    error: Text | None = Field(None, description="why the report could not be read")


class RequestResult(_Strict):
    id: int = Field(ge=1)
    result: Literal["done", "failed", "refused"]
    message: Text = ""


class CheckIn(_Strict):
    """What a host reports (docs/checkin.schema.json)."""

    apiVersion: Literal["atoll/v1"] = API_VERSION
    kind: Literal["CheckIn"] = "CheckIn"
    host_id: HostId = Field(description="from enrolment; the key that signs must be its own")
    counter: int = Field(ge=1, le=MAX_COUNTER,
                         description="larger than in every check-in before (replays refused)")
    sent: Short = Field(description="when the host sent it (ISO 8601, informational)")
    agent_version: Short
    status: HostStatusDoc
    apps: list[AppReport] = Field(default_factory=list, max_length=64)
    policy: dict[str, Any] = Field(default_factory=dict, max_length=64,
                                   description="the host's update policy (atoll policy show)")
    manifest_sha256: Sha256 | None = Field(
        None, description="sha256 of the canonical JSON of the booted commit's manifest")
    manifest: list[Package] | None = Field(
        None, max_length=MAX_MANIFEST_PACKAGES,
        description="sent only when the server asked for it (manifest_wanted)")
    requests: list[RequestResult] = Field(
        default_factory=list, max_length=100,
        description="what the host did with operators' requests since the last check-in")
    cves: CveFacts | None = Field(
        None, description="open CVEs of the booted deployment and what the update fixes "
        "(optional: older agents send none)")


# -- the answer --------------------------------------------------------------


class Target(_Strict):
    """A version TUF signs on a channel; the host verifies it before it takes it."""

    channel: Short
    version: Short
    commit: Commit


class HostRequestOut(_Strict):
    id: int
    kind: Literal["cancel", "pin", "ack-rollback", "apply"]
    args: dict[str, Any] = Field(default_factory=dict)


class Directive(_Strict):
    """The answer to a check-in.

    ``target`` null: no rollout governs the host; it follows its own policy (``allow``
    lists every step). With a target, the host moves only to it and only by the steps
    ``allow`` lists now; its own policy, the customer's trigger and its maintenance
    windows still decide when it applies.
    """

    apiVersion: Literal["atoll/v1"] = API_VERSION
    kind: Literal["Directive"] = "Directive"
    host_id: HostId
    counter: int
    target: Target | None = None
    allow: list[Step] = Field(default_factory=lambda: list(STEPS))
    reason: Text = ""
    requests: list[HostRequestOut] = Field(default_factory=list)
    manifest_wanted: bool = False
    expires: Short = Field(description="after this time (ISO 8601) the host no longer "
                           "holds itself to this directive")


# -- signing -----------------------------------------------------------------


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64decode(text: str) -> bytes:
    """Raises: ValueError: not base64."""
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64") from None


def sign(private_key: Any, host_id: str, body: bytes) -> str:
    """The ``Atoll-Signature`` header for ``body`` sent by ``host_id`` (an
    Ed25519PrivateKey): ``host=<host id>;ed25519=<base64 signature>``."""
    return f"host={host_id};ed25519=" + b64encode(private_key.sign(SIGNING_CONTEXT + body))


_SIG = re.compile(r"^host=([0-9a-f-]{36});ed25519=([A-Za-z0-9+/=]{86,88})$")


def parse_signature(header: str | None) -> tuple[str, bytes] | None:
    """``(host_id, 64 signature bytes)`` of an ``Atoll-Signature`` header; None if malformed."""
    m = _SIG.match((header or "").strip())
    if m is None:
        return None
    try:
        sig = b64decode(m[2])
    except ValueError:
        return None
    return (m[1], sig) if len(sig) == 64 else None


def verify(public_key_b64: str, body: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the host key's signature of ``body``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key_b64))
        key.verify(signature, SIGNING_CONTEXT + body)
    except (InvalidSignature, ValueError):
        return False
    return True


def manifest_digest(packages: list[Package]) -> str:
    """sha256 of the canonical JSON of a manifest (fields that are null left out)."""
    from atoll.core.canonjson import sha256_of

    return sha256_of([p.model_dump(exclude_none=True) for p in packages])


def json_schemas() -> dict[str, dict[str, Any]]:
    """docs/checkin.schema.json and docs/directive.schema.json, from the models (a test
    keeps the files equal to these: ``python -m atoll.control.protocol DOCS_DIR``)."""
    out = {}
    for name, model, title in (("checkin", CheckIn, "atoll/v1 CheckIn: POST /v1/checkin"),
                               ("directive", Directive,
                                "atoll/v1 Directive: the answer to a check-in")):
        out[f"{name}.schema.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://atoll.invalid/schemas/{name}/v1",
            **model.model_json_schema(), "title": title}
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys
    from pathlib import Path

    for file, schema in json_schemas().items():
        (Path(sys.argv[1]) / file).write_text(json.dumps(schema, indent=2) + "\n")
