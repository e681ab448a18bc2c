"""Provisioning: a host config (YAML) applied once at first boot, baked or from a seed.

- ``config``: the host config model (validated, located errors)
- ``apply``: apply it to a root directory, idempotently, recording what it did
- ``seed``: a NoCloud-style config drive (label CIDATA) carrying it
- ``feature``: the ``provision`` image feature (the first-boot unit)
"""

import atoll.provision.feature  # noqa: F401  (registers the "provision" image feature)
