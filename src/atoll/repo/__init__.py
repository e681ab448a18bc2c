"""The update repository: TUF publishing side, and the host's client.

* :mod:`atoll.repo.keys` -- key directory (root offline, online roles), policy
* :mod:`atoll.repo.tufrepo` -- TUF metadata (python-tuf Metadata API)
* :mod:`atoll.repo.publish` -- commits as targets: pack, index, deltas, manifest, SBOM
* :mod:`atoll.repo.client` -- remotes, ``update check`` / ``update download`` (tuf.ngclient)
* :mod:`atoll.repo.plan` -- what to download (pure)
* :mod:`atoll.repo.fetch` -- HTTP with ranges, timeouts and bounds
"""

__all__: list[str] = []
