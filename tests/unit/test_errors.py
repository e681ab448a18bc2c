"""Errors that crossed a process boundary come back as the same branch."""

from __future__ import annotations

from atoll.core import errors


def test_error_class_by_name() -> None:
    assert errors.error_class("MetadataExpiredError") is errors.MetadataExpiredError
    assert errors.error_class("HostStateError") is errors.HostStateError
    # constructors that differ map to the nearest ancestor that takes (brief, details, ...)
    assert errors.error_class("SpecError") is errors.InputError
    assert errors.error_class("ToolError") is errors.AtollError
    assert errors.error_class("NoSuchError") is errors.AtollError
    e = errors.error_class("DownloadError")("x", details="d", resolution="r")
    assert (e.brief, e.details, e.resolution) == ("x", "d", "r")
