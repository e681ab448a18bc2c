"""The Debian security tracker's urgency words, in order (pure; host side).

The tracker gives each CVE, per release, one of ``unimportant``, ``low``,
``medium``, ``high``, ``not yet assigned`` or ``end-of-life``
(https://security-tracker.debian.org/tracker/data/json; a trailing ``*`` or ``**``
marks an urgency taken from NVD and is dropped here). ``not yet assigned`` has no
place in the order: the operator says which urgency it counts as (``--unassigned``,
default ``medium``). ``end-of-life`` (the release no longer gets security support
for the package) counts as ``unimportant``: no fix will come to wait for.
"""

from __future__ import annotations

from atoll.core.errors import InputError

__all__ = ["ORDER", "UNASSIGNED", "normalize", "rank", "validate"]

ORDER = ("unimportant", "low", "medium", "high")
UNASSIGNED = "not yet assigned"
_KNOWN = {*ORDER, UNASSIGNED, "end-of-life"}


def normalize(word: str) -> str:
    """The tracker's word without NVD's ``*`` marks, lowercased; unknown words are
    kept as they are (they rank as ``not yet assigned``)."""
    return word.strip().rstrip("*").strip().lower()


def validate(word: str, what: str = "urgency") -> str:
    """``word`` if it is one of :data:`ORDER`.

    Raises:
        InputError: any other word (names the allowed ones).
    """
    if word not in ORDER:
        raise InputError(f"{what}: {word!r} is not an urgency",
                         resolution=f"use one of: {', '.join(ORDER)}")
    return word


def rank(word: str | None, *, unassigned: str = "medium") -> int:
    """The position of ``word`` in :data:`ORDER` (0 = unimportant, 3 = high).

    ``not yet assigned``, an empty or unknown word and None rank as ``unassigned``;
    ``end-of-life`` as ``unimportant``.
    """
    w = normalize(word or "")
    if w == "end-of-life":
        w = "unimportant"
    if w not in ORDER:
        w = unassigned
    return ORDER.index(w)
