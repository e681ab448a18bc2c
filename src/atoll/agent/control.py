"""atolld and the fleet control plane: enrolment, signed check-ins, operators' requests,
and the gate a directive puts on the agent's own steps (docs/control-plane.md).

    <sysroot>/atoll/state/control/     0700, root
    ├── config.json     {"url", "ca", "interval_s", "jitter_s"} (the host config's control:)
    ├── ca.pem          the CA bundle the server's certificate is checked against, if given
    ├── enrol-token     the one-time enrolment token (0600); removed once enrolled
    ├── host.key        the host's Ed25519 key (PKCS#8 PEM, 0600): made here, never sent
    ├── host.json       {"host_id", "name", "customer", "url", "enrolled"}
    └── checkin.json    {"counter", "last_ok", "last_error", "directive", "results", "done"}

The control plane is advice the host may do without: when it cannot be reached,
atolld goes on checking, downloading and applying by its own policy, exactly as
without one. A directive with a target holds the agent's *automatic* download,
prepare and apply to that target and to the steps it allows, until it expires;
an explicit apply (the customer's ``atoll update apply``, or an operator's request
the host's policy allows) is not held back. While a directive names a target, the
agent's checks and downloads ask the update repository for that signed version
(``atoll update check|download --version V``): the host's TUF client verifies it,
and refuses a version that is not signed or is older than the one the host runs (a
directive can never allow a downgrade). A step is taken only when the commit the
client verified for that version is the directive's commit; else nothing is taken.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import atoll
from atoll.agent.policy import AgentState, Decision
from atoll.agent.state import AgentFiles, iso
from atoll.core import canonjson
from atoll.core.errors import AtollError, DamagedStateError, InputError
from atoll.core.fsutil import atomic_write, atomic_write_json, read_state_json

if TYPE_CHECKING:
    from atoll.agent.daemon import Agent

__all__ = ["Control", "ControlFiles", "app_reports", "check_answer", "fit_checkin", "gate",
           "target_version"]

log = logging.getLogger("atoll.agent")
TIMEOUT_S = 30
MAX_ANSWER = 1 << 20
MAX_RESULTS = 100


def _utc(text: str) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


MAX_HOLD = dt.timedelta(days=7)  # the longest a directive holds the agent's own steps


def held_until(expires: Any, now: dt.datetime) -> str | None:
    """A directive's expiry as the agent keeps it: at most :data:`MAX_HOLD` after it
    arrived, whatever the server says (a compromised or misconfigured control plane
    cannot hold a host for years); None when it has none or it does not parse. Pure."""
    t = _utc(str(expires)) if isinstance(expires, str) else None
    if t is None:
        return None
    return iso(min(t, now + MAX_HOLD))


_STEPS = ("download", "prepare", "apply")
_COMMIT = re.compile(r"[0-9a-f]{64}")


def check_answer(answer: Any) -> dict[str, Any]:
    """The fields of a check-in's answer (a ``Directive``) the agent acts on, checked;
    others are ignored (a newer server may add some). Pure.

    A compromised control plane must not be able to stop the agent: a target version
    goes to ``atoll update check --version`` as an argument (a NUL byte, or one over the
    kernel's argument size, would make every tick fail, for as long as the directive
    holds), and ``allow`` and ``requests`` are iterated.

    Raises:
        AtollError: not a directive the agent can act on (the check-in counts as failed;
            the directive held before stays until it expires).
    """
    def bad(why: str) -> AtollError:
        return AtollError(f"the control plane's answer is not a valid directive ({why}); "
                          "ignored", resolution="the agent goes on with the directive it "
                          "held, then by its own policy")

    if not isinstance(answer, dict):
        raise bad("not an object")
    target = answer.get("target")
    if target is not None:
        if not isinstance(target, dict) or not all(
                isinstance(target.get(k), str) for k in ("channel", "version", "commit")):
            raise bad("target")
        version = target["version"]
        if not version or len(version) > 200 or not version.isprintable() \
                or not _COMMIT.fullmatch(target["commit"]):
            raise bad("target version or commit")
        target = {k: target[k] for k in ("channel", "version", "commit")}
    allow = answer.get("allow") or []
    if not isinstance(allow, list) or not all(a in _STEPS for a in allow):
        raise bad("allow")
    requests = answer.get("requests") or []
    if not isinstance(requests, list) or not all(
            isinstance(r, dict) and type(r.get("id")) is int and isinstance(r.get("kind"), str)
            and isinstance(r.get("args") or {}, dict) for r in requests):
        raise bad("requests")
    reason, expires = answer.get("reason"), answer.get("expires")
    return {"target": target, "allow": list(allow),
            "reason": reason[:1000] if isinstance(reason, str) else None,
            "expires": expires if isinstance(expires, str) else None,
            "requests": requests,
            "manifest_wanted": answer.get("manifest_wanted") is True}


@dataclass(frozen=True)
class ControlConfig:
    url: str
    ca: str | None = None
    interval_s: int = 300
    jitter_s: int = 30


class ControlFiles:
    """The files of the host's side (layout in the module docstring)."""

    def __init__(self, sysroot: Path):
        self.dir = Path(sysroot) / "atoll" / "state" / "control"
        self.config_path = self.dir / "config.json"
        self.token_path = self.dir / "enrol-token"
        self.ca_path = self.dir / "ca.pem"
        self.key_path = self.dir / "host.key"
        self.host_path = self.dir / "host.json"
        self.state_path = self.dir / "checkin.json"

    def _mkdir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def configure(self, url: str, token: Path, *, ca: Path | None = None,
                  interval_s: int = 300, jitter_s: int = 30) -> list[str]:
        """Provisioning: the server's URL and the enrolment token (copied 0600; its
        content is never logged). Idempotent; returns what changed."""
        self._mkdir()
        out = []
        conf = {"url": url, "ca": str(self.ca_path) if ca else None,
                "interval_s": interval_s, "jitter_s": jitter_s}
        if ca is not None:
            data = Path(ca).read_bytes()
            if not self.ca_path.exists() or self.ca_path.read_bytes() != data:
                atomic_write(self.ca_path, data, 0o644)
                out.append("control plane CA bundle")
        if read_state_json(self.config_path, dict, {}, resolution="") != conf:
            atomic_write_json(self.config_path, conf, 0o600)
            out.append(f"control plane {url}: check-in every {interval_s} s")
        host = self.host()
        secret = Path(token).read_bytes().strip() + b"\n"
        enrolled = host is not None and host.get("url") == url
        if not enrolled and (not self.token_path.exists()
                             or self.token_path.read_bytes() != secret):
            atomic_write(self.token_path, secret, 0o600)
            out.append("control plane enrolment token (0600)")
        return out

    def config(self) -> ControlConfig | None:
        """None when the host has no control plane."""
        try:
            raw = read_state_json(self.config_path, dict, None,
                                  resolution="apply the host config again")
        except DamagedStateError as exc:
            log.warning("%s: no check-ins until it is rewritten", exc.brief)
            return None
        if not raw or not isinstance(raw.get("url"), str):
            return None
        return ControlConfig(raw["url"], raw.get("ca"), int(raw.get("interval_s") or 300),
                             int(raw.get("jitter_s") or 0))

    def host(self) -> dict[str, Any] | None:
        try:
            raw = read_state_json(self.host_path, dict, None, resolution="")
        except DamagedStateError:
            return None
        return dict(raw) if raw and isinstance(raw.get("host_id"), str) else None

    def key(self) -> Any:
        """The host's Ed25519 private key, made on first use (0600 from its creation)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if self.key_path.exists():
            return serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        self._mkdir()
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        atomic_write(self.key_path, pem, 0o600)
        return key

    def state(self) -> dict[str, Any]:
        try:
            return dict(read_state_json(self.state_path, dict, {}, resolution="") or {})
        except DamagedStateError:
            log.warning("%s does not read; starting a new one", self.state_path)
            return {}

    def save_state(self, data: dict[str, Any]) -> None:
        self._mkdir()
        atomic_write_json(self.state_path, data, 0o600)

    def directive(self) -> dict[str, Any] | None:
        d = self.state().get("directive")
        return d if isinstance(d, dict) else None


# -- what the host reports -----------------------------------------------------


def app_reports(sysroot: Path) -> list[dict[str, Any]]:
    """Each installed app: image, role, its container's state and health, and for a
    database its replication role and lag. What cannot be read is said in ``error``."""
    from atoll.apps.manager import installed_apps, status
    from atoll.apps.plan import is_database

    out = []
    try:
        apps = installed_apps(sysroot)
    except AtollError as exc:
        log.warning("check-in: apps not readable: %s", exc.brief)
        return []
    for inst in apps:
        rep: dict[str, Any] = {"name": inst.name, "image": inst.spec.image,
                               "role": inst.spec.role.value}
        try:
            c = status(sysroot, inst.name)["container"]
            rep["container"] = ({"state": c.get("status"), "health": c.get("health"),
                                 "started_at": c.get("started_at")} if c else None)
        except AtollError as exc:
            rep["error"] = exc.brief[:1000]
        if is_database(inst.spec) and rep.get("container"):
            from atoll.agent.replication import replication_facts

            try:
                f = replication_facts(sysroot, inst.name)
                rep["database"] = {"role": f.role, "lag_s": f.replica_lag_seconds,
                                   "io_running": f.io_running, "sql_running": f.sql_running}
            except AtollError as exc:
                rep["database"] = {"role": "unknown"}
                rep["error"] = f"replication: {exc.brief}"[:1000]
        out.append(rep)
    return out


def _manifest(sysroot: Path, status: dict[str, Any]) -> list[dict[str, Any]] | None:
    booted = status.get("booted") or {}
    if not booted.get("commit"):
        return None
    from atoll.deploy.sysroot import Sysroot

    try:
        return [dict(p) for p in Sysroot(sysroot).repo.read_commit(booted["commit"]).manifest]
    except (AtollError, OSError):
        return None


# -- the gate (pure) -------------------------------------------------------------


def fit_checkin(doc: dict[str, Any], limit: int) -> bytes:
    """The check-in as canonical JSON, within ``limit`` bytes when the CVE ids are what
    makes it too large: the least urgent ids are dropped (halving the list) and
    ``cves.open_cves_truncated`` says so; the counts per urgency stay whole."""
    body = canonjson.dumps(doc)
    cves = doc.get("cves") if isinstance(doc.get("cves"), dict) else None
    while len(body) > limit and cves is not None and cves.get("open_cves"):
        cves["open_cves"] = cves["open_cves"][:len(cves["open_cves"]) // 2]
        cves["open_cves_truncated"] = True
        body = canonjson.dumps(doc)
    return body


def target_version(directive: dict[str, Any] | None, now: dt.datetime) -> str | None:
    """The version a directive's target names while it holds (not expired), else None.
    Pure."""
    if not directive or not isinstance(directive.get("target"), dict):
        return None
    expires = _utc(str(directive.get("expires", "")))
    version = directive["target"].get("version")
    if expires is None or now >= expires or not isinstance(version, str) or not version \
            or len(version) > 200 or not version.isprintable():  # see check_answer
        return None
    return version



def gate(d: Decision, st: AgentState, directive: dict[str, Any] | None, now: dt.datetime,
         retry_s: int = 300) -> Decision:
    """``d`` as the control plane's directive lets it be. Pure.

    Only the agent's own download, prepare and apply are held; a directive without a
    target, an expired one, or an explicit apply request leave ``d`` as it is.
    """
    if d.action not in ("download", "prepare", "apply") or not directive:
        return d
    target = directive.get("target")
    expires = _utc(str(directive.get("expires", "")))
    if not isinstance(target, dict) or expires is None or now >= expires:
        return d
    if st.request is not None:
        return d  # the customer's (or an allowed operator's) explicit apply decides
    acting = {"download": st.available, "prepare": st.downloaded,
              "apply": st.prepared or st.pending}[d.action]
    version, commit = str(target.get("version")), str(target.get("commit"))
    wake = now + dt.timedelta(seconds=retry_s)
    if acting != commit:
        if commit == st.booted:
            why = f"control plane: hold at {version} (booted); not taking {str(acting)[:12]}"
        else:
            why = (f"control plane: target {version} ({commit[:12]}) is not what this "
                   f"host's TUF client verified ({str(acting)[:12]}): waiting")
        return Decision("none", why, wake)
    if d.action not in (directive.get("allow") or []):
        reason = directive.get("reason") or "not allowed yet"
        return Decision("none", f"control plane: {d.action} of {version} not allowed now "
                        f"({reason})", wake)
    return d


# -- the agent's side ------------------------------------------------------------


class Control:
    """Enrol, check in, act on operators' requests: for one agent."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.sysroot = agent.sysroot
        self.files = ControlFiles(agent.sysroot)

    def wanted_version(self, now: dt.datetime) -> str | None:
        """The signed version a live directive names (the agent's checks and downloads
        ask for it), or None: the channel's newest."""
        if self.files.config() is None:
            return None
        return target_version(self.files.directive(), now)

    def gate(self, d: Decision, st: AgentState, now: dt.datetime) -> Decision:
        cfg = self.files.config()
        if cfg is None:
            return d
        return gate(d, st, self.files.directive(), now, retry_s=cfg.interval_s)

    # -- HTTP --------------------------------------------------------------

    def _post(self, cfg: ControlConfig, path: str, body: bytes,
              headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(cfg.url.rstrip("/") + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        context = ssl.create_default_context(cafile=cfg.ca) if cfg.ca else None
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=context) as resp:
                status, raw = resp.status, resp.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_ANSWER)
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = {}
        return status, doc if isinstance(doc, dict) else {}

    def enrol(self, cfg: ControlConfig) -> dict[str, Any]:
        """Enrol with the one-time token; the token file is removed once it is spent.

        Raises:
            InputError: no token, or the server refused it (a new one is needed).
        """
        from atoll.agent.host import node_id
        from atoll.control.protocol import b64encode

        try:
            token = self.files.token_path.read_text().strip()
        except FileNotFoundError:
            raise InputError("not enrolled with the control plane, and no enrolment token",
                             resolution="an operator makes one (atoll fleet enrol-token "
                             "create); it goes in the host config's control.enrol_token"
                             ) from None
        from cryptography.hazmat.primitives import serialization

        public = self.files.key().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        machine_id = node_id(self.sysroot)
        body = {"name": _hostname(self.sysroot), "public_key": b64encode(public),
                "machine_id": machine_id if len(machine_id) == 32 else None}
        status, doc = self._post(cfg, "/v1/enrol", canonjson.dumps(body),
                                 {"Authorization": f"Bearer {token}"})
        if status != 200:
            raise InputError(f"enrolment refused (HTTP {status}): {doc.get('brief', '')}",
                             resolution=doc.get("resolution"))
        host = {"host_id": doc["host_id"], "name": doc["name"], "customer": doc["customer"],
                "url": cfg.url, "enrolled": iso(dt.datetime.now(dt.UTC))}
        atomic_write_json(self.files.host_path, host, 0o600)
        self.files.token_path.unlink(missing_ok=True)  # spent: it is worth nothing now
        log.info("enrolled with the control plane %s as %s (customer %s)", cfg.url,
                 host["name"], host["customer"])
        return host

    def checkin(self, now: dt.datetime | None = None) -> dict[str, Any] | None:
        """Enrol if needed, check in once (twice when the server asks for the package
        manifest), act on the operators' requests. Returns the directive, or None
        when there is no control plane.

        Raises:
            AtollError: enrolment refused, or the check-in refused (the caller logs it
                and tries again at the next interval).
            OSError: the server cannot be reached.
        """
        cfg = self.files.config()
        if cfg is None:
            return None
        host = self.files.host()
        if host is None or host.get("url") != cfg.url:
            host = self.enrol(cfg)
        directive = self._send(cfg, host["host_id"], now, with_manifest=False)
        if directive.get("manifest_wanted"):
            directive = self._send(cfg, host["host_id"], now, with_manifest=True)
        if self._act(directive):  # report what was done now, not an interval later
            directive = self._send(cfg, host["host_id"], now, with_manifest=False)
        return directive

    def _send(self, cfg: ControlConfig, host_id: str, now: dt.datetime | None, *,
              with_manifest: bool) -> dict[str, Any]:
        from atoll.control.protocol import (
            MAX_CHECKIN_BYTES,
            CheckIn,
            Package,
            manifest_digest,
            sign,
        )
        from atoll.deploy.status import host_status
        from atoll.security.host import checkin_facts

        now = now or dt.datetime.now(dt.UTC)
        state = self.files.state()
        # larger than every counter before, even after a restored state file
        counter = max(int(state.get("counter") or 0) + 1, int(now.timestamp() * 1000))
        state["counter"] = counter
        self.files.save_state(state)  # before sending: a counter is never used twice
        status = host_status(self.sysroot)
        manifest = _manifest(self.sysroot, status)
        packages = [Package.model_validate(p) for p in manifest] if manifest else None
        doc: dict[str, Any] = {
            "host_id": host_id, "counter": counter, "sent": iso(now),
            "agent_version": atoll.__version__, "status": status,
            "apps": app_reports(self.sysroot),
            "policy": AgentFiles(self.sysroot).policy().to_json(),
            "manifest_sha256": manifest_digest(packages) if packages else None,
            "requests": list(state.get("results") or []),
            "cves": checkin_facts(self.sysroot, now)}  # docs/security.md
        if with_manifest and packages:
            doc["manifest"] = [p.model_dump(exclude_none=True) for p in packages]
        CheckIn.model_validate(doc)  # never send what the server would refuse
        body = fit_checkin(doc, MAX_CHECKIN_BYTES)
        key = self.files.key()
        code, answer = self._post(cfg, "/v1/checkin", body,
                                  {"Atoll-Signature": sign(key, host_id, body)})
        if code != 200:
            state = self.files.state()
            state["last_error"] = {"time": iso(now), "status": code,
                                   "brief": str(answer.get("brief", ""))[:500]}
            self.files.save_state(state)
            raise AtollError(f"check-in refused (HTTP {code}): {answer.get('brief', '')}",
                             resolution=answer.get("resolution"))
        answer = check_answer(answer)
        state = self.files.state()
        reported = {r["id"] for r in doc["requests"]}
        state["results"] = [r for r in state.get("results") or [] if r["id"] not in reported]
        state["directive"] = {k: answer.get(k) for k in ("target", "allow", "reason",
                                                         "expires", "requests")}
        state["directive"]["expires"] = held_until(answer.get("expires"), now)
        state["last_ok"] = iso(now)
        state.pop("last_error", None)
        self.files.save_state(state)
        return answer

    # -- operators' requests ------------------------------------------------

    def _act(self, directive: dict[str, Any]) -> bool:
        """Do the requests not done yet; True when there was one."""
        state = self.files.state()
        done = list(state.get("done") or [])
        results = list(state.get("results") or [])
        for req in directive.get("requests") or []:
            if not isinstance(req, dict) or req.get("id") in done:
                continue
            result, message = self._do(str(req.get("kind")), req.get("args") or {})
            log.info("control plane request #%s (%s): %s %s", req.get("id"), req.get("kind"),
                     result, message)
            results.append({"id": req["id"], "result": result, "message": message[:1000]})
            done.append(req["id"])
        acted = len(done) != len(state.get("done") or [])
        state = self.files.state()
        state["done"] = done[-MAX_RESULTS:]
        state["results"] = results[-MAX_RESULTS:]
        self.files.save_state(state)
        return acted

    def _do(self, kind: str, args: dict[str, Any]) -> tuple[str, str]:
        """One request through the agent's own paths: (done|failed|refused, message)."""
        from atoll.deploy.sysroot import Sysroot

        agent = self.agent
        try:
            if kind == "cancel":
                had = agent.cancel_apply()["cancelled"]
                return "done", "scheduled apply cancelled" if had else "nothing was scheduled"
            if kind == "ack-rollback":
                acked = Sysroot(self.sysroot).acknowledge_rollback()
                return "done", ("acknowledged the rollback of " + str(acked.get("time"))
                                if acked else "no unacknowledged rollback")
            if kind == "pin":
                return self._pin(str(args.get("deployment", "booted")),
                                 bool(args.get("pinned", True)))
            if kind == "apply":
                if not agent.files.policy().operator_apply:
                    return "refused", ("the host's policy does not let operators schedule "
                                       "its apply; it waits for the customer's own trigger")
                out = agent.request_apply("window", None, True)
                return "done", out.get("note") or out["decision"]["reason"]
        except InputError as exc:
            return "refused", exc.brief
        except AtollError as exc:
            return "failed", exc.brief
        return "refused", f"unknown request {kind!r}"

    def _pin(self, which: str, pinned: bool) -> tuple[str, str]:
        from atoll.deploy import plan
        from atoll.deploy.sysroot import Sysroot

        sr = Sysroot(self.sysroot)
        deps = sr.deployments()
        roles = plan.roles([d.id for d in deps], sr.booted_id())
        for i, d in enumerate(deps):
            if which in (d.id, roles.get(d.id)):
                dep = sr.pin(i, pinned)
                return "done", f"{'pinned' if pinned else 'unpinned'} {dep.id}"
        return "refused", f"no deployment {which!r}"

    # -- the schedule --------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Check in every interval (plus jitter) until ``stop``; never raises."""
        first = True
        while not stop.is_set():
            cfg = self.files.config()
            interval = cfg.interval_s if cfg else 300
            jitter = random.uniform(0, cfg.jitter_s) if cfg else 0.0
            if first:  # after a start (a reboot): soon, spread over the jitter
                first, delay = False, jitter
            else:
                delay = interval + jitter
            if stop.wait(delay):
                return
            try:
                if self.checkin() is not None:
                    self.agent.wakeup.set()  # a new directive may change the next step
            except (AtollError, OSError) as exc:
                brief = getattr(exc, "brief", None) or str(exc)
                log.warning("control plane check-in failed (the agent goes on by its own "
                            "policy): %s", brief)
            except Exception:
                log.exception("control plane check-in: internal error")


def _hostname(sysroot: Path) -> str:
    try:
        name = (Path(sysroot) / "etc/hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname().split(".")[0]
