"""/etc three-way merge decisions."""

from __future__ import annotations

from atoll.deploy.etcmerge import Sig, plan_merge


def f(digest: str, mode: int = 0o644) -> Sig:
    return Sig("f", mode, 0, 0, digest)


D = Sig("d", 0o755, 0, 0, "")
LINK_OUT = Sig("l", 0o777, 0, 0, "/outside")


def test_untouched_file_takes_new_default() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("1")}, {"a": f("2")})
    assert p.take_new == ("a",) and not p.conflicts


def test_host_change_kept_when_image_unchanged() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("h")}, {"a": f("1")})
    assert p.keep_current == ("a",) and not p.conflicts


def test_both_changed_is_a_conflict_and_host_wins() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("h")}, {"a": f("2")})
    assert p.keep_current == ("a",) and p.conflicts == ("a",)


def test_both_changed_the_same_way() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("2")}, {"a": f("2")})
    assert p.keep_current == ("a",) and not p.conflicts


def test_mode_change_counts_as_change() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("1", 0o600)}, {"a": f("2")})
    assert p.conflicts == ("a",)


def test_new_file_in_image_added_and_removed_file_removed() -> None:
    p = plan_merge({"gone": f("1")}, {"gone": f("1")}, {"new": f("n")})
    assert p.take_new == ("new",) and p.keep_current == ()


def test_host_deleted_file_stays_deleted_unless_image_changed_it() -> None:
    assert plan_merge({"a": f("1")}, {}, {"a": f("1")}).take_new == ()
    p = plan_merge({"a": f("1")}, {}, {"a": f("2")})
    assert p.conflicts == ("a",) and p.take_new == () and p.keep_current == ()


def test_host_file_keeps_directory_the_image_removed() -> None:
    old = {"d": D, "d/x": f("1")}
    cur = {"d": D, "d/x": f("1"), "d/mine": f("m")}
    p = plan_merge(old, cur, {})
    assert set(p.keep_current) == {"d", "d/mine"} and not p.take_new


def test_nothing_is_written_below_a_symlink() -> None:
    # the host replaced a directory by a symlink pointing outside; the image adds a file in it
    old = {"d": D}
    cur = {"d": LINK_OUT}
    new = {"d": D, "d/added": f("n")}
    p = plan_merge(old, cur, new)
    assert "d/added" not in p.take_new + p.keep_current
    assert "d/added" in p.conflicts
