"""CVEs per image and per update: the Debian security tracker's data, the CVEs
Debian changelogs say a version fixes, the signed CVE report published beside an
image, and the urgency order a host's update policy compares against (docs/security.md).

Modules: ``urgency`` (the tracker's urgency words, ordered; pure, host side),
``report`` (the published CVE report: its shape, checks and summaries; host side),
``tracker`` (parsing the tracker's JSON; publishing side), ``advisories`` (the
tracker's DSA/DLA lists; publishing side), ``changelog`` (CVEs in the
changelogs of ``.deb`` files; publishing side, python-debian).
"""
