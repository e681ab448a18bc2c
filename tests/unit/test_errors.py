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


def test_os_errors_name_the_file_not_a_temp_name(monkeypatch: object) -> None:
    import errno
    import os

    import pytest

    from atoll.cli import os_error

    err = os_error(PermissionError(errno.EACCES, "Permission denied",
                                   "/h/atoll/state/.policy.json.zgtpe2b7.tmp"))
    assert err.brief == "permission denied: /h/atoll/state/policy.json"
    err = os_error(OSError(errno.ENAMETOOLONG, "File name too long",
                           "/r/refs/heads/.rrrr.1234.tmp"))
    assert isinstance(err, errors.InputError) and err.brief == "name too long: /r/refs/heads/rrrr"
    mp = pytest.MonkeyPatch()
    try:  # not root: "run as root" for root's files, the permissions for one's own
        mp.setattr(os, "geteuid", lambda: 1000)
        err = os_error(PermissionError(errno.EACCES, "Permission denied", "/etc/x"))
        assert err.resolution == "run as root (sudo atoll ...)"
        mp.setattr(os, "lstat", lambda p: os.stat_result((0o40700, 0, 0, 0, 1000, 1000, 0,
                                                          0, 0, 0)))
        err = os_error(PermissionError(errno.EACCES, "Permission denied", "/home/u/repo/x"))
        assert "belongs to uid 1000" in (err.resolution or "")
    finally:
        mp.undo()


def test_atomic_writes_name_their_target(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from atoll.core.fsutil import atomic_write

    target = Path(str(tmp_path)) / "missing-dir" / "policy.json"
    with pytest.raises(OSError) as exc:
        atomic_write(target, b"{}")
    assert exc.value.filename == str(target)


def test_state_files_are_read_with_their_shape(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from atoll.core.fsutil import read_state_json

    d = Path(str(tmp_path))
    assert read_state_json(d / "none.json", dict, {"a": 1}, resolution="x") == {"a": 1}
    for content, why in ((b"{", "not valid JSON"), (b"\xff", "not UTF-8"),
                         (b"[1]", "expected an object, found a list")):
        (d / "f.json").write_bytes(content)
        with pytest.raises(errors.DamagedStateError, match=why) as exc:
            read_state_json(d / "f.json", dict, resolution="do this")
        assert exc.value.resolution == "do this" and exc.value.path == str(d / "f.json")
