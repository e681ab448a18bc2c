"""Re-computing the published CVE reports from a newer tracker file (``atoll timestamp
--security-tracker FILE``, the cron command that keeps the repository fresh).

Every ``cves/<commit>.json`` the targets metadata lists is rebuilt from what is
published beside it, so the publisher's store is not needed: the image's
manifest (``manifests/<commit>.json``, and the previous image's when still
signed) and the changelog facts of the old report (a changelog does not age).
The new reports get a new ``generated`` and ``expires`` and are signed in one
targets transaction (atoll.repo.tufrepo: all or nothing). A report whose
manifest is no longer published, or whose release is unknown, is left as it is.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import RepositoryError
from atoll.repo.keyops import online_signers
from atoll.repo.keys import ONLINE_ROLES, KeyDir
from atoll.repo.storage import Storage
from atoll.repo.tufrepo import TufRepository, target_url_path
from atoll.security.advisories import AdvisoryIndex
from atoll.security.build import DEFAULT_VALID_FOR, make_report
from atoll.security.report import check_report
from atoll.security.tracker import TrackerData

__all__ = ["refresh_reports"]

log = logging.getLogger("atoll.security")


def _read(storage: Storage, targets: Any, path: str) -> Any | None:
    tf = targets.get(path)
    if tf is None:
        return None
    data = storage.get("targets/" + target_url_path(path, tf.hashes["sha256"]))
    if data is None:
        data = storage.get("targets/" + path)  # a repository without consistent snapshots
    return None if data is None else canonjson.loads(data)


def refresh_reports(storage: Storage, keys: KeyDir, tracker: TrackerData, *,
                    expires: list[str] | None = None,
                    valid_for: timedelta = DEFAULT_VALID_FOR,
                    advisories: AdvisoryIndex | None = None) -> dict[str, str]:
    """Rebuild and re-sign every published CVE report with ``tracker`` (and the DSA/DLA
    lists ``advisories``: without them the new reports carry no advisory ids).

    Returns:
        {target path: the new report's expiry (ISO 8601 UTC)}.

    Raises:
        InputError: missing keys, a bad --expires, tracker entries of a bad shape.
        RepositoryError: no repository, a published report that does not read, or hosts
            would refuse the result (nothing is written then).
    """
    tuf = TufRepository(storage, keys.policy().override(expires or [], signs=ONLINE_ROLES,
                                                        command="atoll timestamp"))
    online = online_signers(keys)
    tuf.check_signers(online)
    targets = tuf.targets().signed.targets
    now = datetime.now(UTC).replace(microsecond=0)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="atoll-cves-") as tmp:
        add: list[tuple[str, Path, dict[str, Any]]] = []
        for path in sorted(p for p in targets if p.startswith("cves/")):
            old = _read(storage, targets, path)
            try:
                old = check_report(old)
            except RepositoryError as exc:
                raise RepositoryError(f"{path}: {exc.brief}",
                                      resolution="publish the commit again") from exc
            commit, since = old["commit"], old["fixes"].get("since")
            if not old.get("release"):  # a commit that records no suite
                log.warning("%s: no release known: left as it is", path)
                continue
            manifest = _read(storage, targets, f"manifests/{commit}.json")
            if not isinstance(manifest, list):
                log.warning("%s: manifests/%s.json is not published: left as it is", path,
                            commit[:12])
                continue
            prev = _read(storage, targets, f"manifests/{since}.json") if since else None
            changelog = [c for c in old["fixes"]["cves"] if "changelog" in c.get("from", [])]
            doc = make_report(commit, old["ref"], old["release"], manifest, since=since,
                              since_manifest=prev if isinstance(prev, list) else None,
                              changelog=changelog, missing=list(old["fixes"]["missing"]),
                              tracker=tracker, now=now, valid_for=valid_for,
                              advisories=advisories)
            file = Path(tmp) / f"{commit}.json"
            file.write_bytes(canonjson.dumps(doc))
            custom = dict(targets[path].unrecognized_fields.get("custom") or {})
            custom["atoll"] = {**custom.get("atoll", {}), "generated": doc["generated"],
                               "expires": doc["expires"]}
            add.append((path, file, custom))
            out[path] = doc["expires"]
        if add:
            tuf.update_targets(online, add=add)
    return out
