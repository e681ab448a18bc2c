"""Static deltas and packs on small synthetic trees committed with Repo.commit_dir."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import zstandard

from atoll.core.errors import CorruptObjectError, HostStateError
from atoll.delta import PackIndex, apply_delta, generate_delta, import_chunk, write_pack
from atoll.delta._util import commit_objects
from atoll.delta.static import read_header, repo_missing
from atoll.store.checkout import checkout
from atoll.store.repo import Repo


def _blob(seed: int, n: int) -> bytes:
    r = random.Random(seed)
    words = [bytes(r.getrandbits(8) for _ in range(r.randint(3, 12))) for _ in range(400)]
    return b" ".join(r.choice(words) for _ in range(n // 7))[:n]


def make_tree(root: Path, version: str, *, extra: bool = False) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / f"usr/lib/modules/{version}/kernel").mkdir(parents=True)
    (root / "etc").mkdir()
    tool = bytearray(_blob(1, 200_000))
    if version != "6.1.0-26-amd64":
        tool[5000:5010] = b"PATCHED-V2"
    (root / "usr/bin/tool").write_bytes(bytes(tool))
    for i in range(5):
        mod = bytearray(_blob(10 + i, 60_000))
        if version != "6.1.0-26-amd64":
            mod[100:108] = b"NEWBUILD"
        (root / f"usr/lib/modules/{version}/kernel/m{i}.ko").write_bytes(bytes(mod))
    (root / "etc/hostname").write_text("atoll\n")
    os.symlink("../usr/bin/tool", root / "etc/tool-link")
    os.chmod(root / "usr/bin/tool", 0o4755)
    if extra:
        (root / "etc/new.conf").write_bytes(os.urandom(3000))
    return root


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Repo, str, str]:
    repo = Repo.create(tmp_path / "repo")
    a = repo.commit_dir(make_tree(tmp_path / "a", "6.1.0-26-amd64"), ref="r", version="1")
    b = repo.commit_dir(make_tree(tmp_path / "b", "6.1.0-28-amd64", extra=True), ref="r",
                        version="2")
    return repo, a, b


def _host_with(tmp_path: Path, src: Repo, commit: str) -> Repo:
    host = Repo.create(tmp_path / "host")
    idx = write_pack(src, commit, tmp_path / "p.pack", tmp_path / "p.index")
    data = (tmp_path / "p.pack").read_bytes()
    metas: dict[tuple[str, str], bytes] = {}
    with host.transaction():
        for n, c in enumerate(idx.chunks):
            import_chunk(host, idx, n, data[c.offset:c.offset + c.clen], metas=metas)
        for (_oid, kind), raw in metas.items():
            if kind == "dirtree":
                host.write_meta_object(raw, kind)
        host.write_meta_object(metas[(commit, "commit")], "commit")
    return host


def _all_sealed(host: Repo, commit: str) -> bool:
    """Every file object of ``commit`` entered the store by its verified write path
    (sealed: deploy will not hash it again)."""
    files = [o.id for o in commit_objects(host, commit) if o.kind == "file"]
    return bool(files) and all(host.is_sealed(i) for i in files)


def _tree_listing(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = os.readlink(p).encode() if p.is_symlink() else (
                b"" if p.is_dir() else p.read_bytes())
            out[str(p.relative_to(root))] = (st.st_mode, data)
    return out


def test_delta_roundtrip_pairs_moved_modules(tmp_path: Path,
                                              two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    stats = generate_delta(repo, a, b, tmp_path / "d.delta")
    assert stats.files_patched == 6  # the tool and five moved modules
    assert stats.files_raw == 1  # etc/new.conf: random, no partner
    assert stats.size < 20_000  # the new content is > 500 kB
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta", expect=(a, b)) == b
    assert _all_sealed(host, a) and _all_sealed(host, b)
    checkout(host, b, tmp_path / "out-host")
    checkout(repo, b, tmp_path / "out-src")
    assert _tree_listing(tmp_path / "out-host") == _tree_listing(tmp_path / "out-src")


def test_delta_needs_from_commit(tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    generate_delta(repo, a, b, tmp_path / "d.delta")
    empty = Repo.create(tmp_path / "empty")
    with pytest.raises(HostStateError):
        apply_delta(empty, tmp_path / "d.delta")
    assert list(empty.iter_objects()) == []


def test_delta_refuses_unexpected_pair(tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    generate_delta(repo, a, b, tmp_path / "d.delta")
    host = _host_with(tmp_path, repo, a)
    with pytest.raises(CorruptObjectError):
        apply_delta(host, tmp_path / "d.delta", expect=(b, a))


def test_corrupt_delta_imports_nothing_bad(tmp_path: Path,
                                           two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    generate_delta(repo, a, b, tmp_path / "d.delta")
    data = bytearray((tmp_path / "d.delta").read_bytes())
    data[-10] ^= 0xFF  # inside the last patch frame
    (tmp_path / "bad.delta").write_bytes(bytes(data))
    host = _host_with(tmp_path, repo, a)
    with pytest.raises(CorruptObjectError):
        apply_delta(host, tmp_path / "bad.delta")
    assert not host.has(b, "commit")
    with pytest.raises(CorruptObjectError), open(tmp_path / "d.delta", "rb") as fh:
        fh.seek(1)
        read_header(fh)


def test_pack_chunks_and_missing_only(tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    host = _host_with(tmp_path, repo, a)
    idx = write_pack(repo, b, tmp_path / "b.pack", tmp_path / "b.index")
    assert PackIndex.from_bytes((tmp_path / "b.index").read_bytes()).chunks == idx.chunks
    missing = {(o[0], o[1]) for o in idx.objects
               if not host.has(o[0], o[1])}
    numbers = idx.chunks_for(missing)
    assert 0 < len(numbers) <= len(idx.chunks)
    data = (tmp_path / "b.pack").read_bytes()
    metas: dict[tuple[str, str], bytes] = {}
    with host.transaction():
        for n in numbers:
            c = idx.chunks[n]
            import_chunk(host, idx, n, data[c.offset:c.offset + c.clen], only=missing,
                         metas=metas)
        assert repo_missing(host, b, metas) == []
        for (_oid, kind), raw in metas.items():
            host.write_meta_object(raw, kind)
    assert _all_sealed(host, b)
    bad = bytearray(data[idx.chunks[0].offset:idx.chunks[0].clen])
    bad[5] ^= 1
    with pytest.raises(CorruptObjectError):
        import_chunk(host, idx, 0, bytes(bad), metas={})
    shutil.rmtree(tmp_path / "a")


def test_gzip_file_rebuilt_from_decompressed_patch(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import atoll.delta.static as static

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    text = _blob(3, 400_000)
    repo = Repo.create(tmp_path / "repo")
    ids = []
    for v, body in ((1, text), (2, b"NEW HEADER " * 10 + text)):  # shifts every deflate block
        root = tmp_path / f"t{v}"
        (root / "boot").mkdir(parents=True)
        gz = subprocess.run(["gzip", "-n", "-6"], input=body, capture_output=True,
                            check=True).stdout
        (root / "boot/initrd.img").write_bytes(gz)
        ids.append(repo.commit_dir(root, ref="r"))
    diffed: list[int] = []  # its compressed bytes differ throughout: not worth a diff
    monkeypatch.setattr(static, "_Bsdiff", lambda c, b, _diff: diffed.append(len(c)))
    stats = generate_delta(repo, ids[0], ids[1], tmp_path / "d.delta")
    assert stats.files_rebuilt == 1 and diffed == []
    assert stats.size < 5_000  # the compressed file is > 100 kB and all new
    host = _host_with(tmp_path, repo, ids[0])
    assert apply_delta(host, tmp_path / "d.delta") == ids[1]
    assert host.verify_file(next(e.id for _p, e in host.walk(host.read_commit(ids[1]).tree)
                                 if not e.is_dir))


def _newc(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for i, (name, data) in enumerate([*members, ("TRAILER!!!", b"")]):
        nb = name.encode() + b"\0"
        fields = [i + 1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + nb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def test_initramfs_rebuilt_from_new_tree_files(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import atoll.delta.static as static
    from atoll.delta.recompress import cpio_members

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    repo = Repo.create(tmp_path / "repo")
    ids = []
    for v in (1, 2):
        root = tmp_path / f"t{v}"
        mods = root / f"usr/lib/modules/6.1.0-{v}-amd64"
        mods.mkdir(parents=True)
        members = []
        for i in range(4):
            body = random.Random(v * 10 + i).randbytes(30_000)  # a new build: all different
            (mods / f"m{i}.ko").write_bytes(body)
            members.append((f"usr/lib/modules/6.1.0-{v}-amd64/m{i}.ko", body))
        cpio = _newc([("conf/x.conf", b"MODULES=most\n"), *members])
        assert [m[0] for m in cpio_members(cpio)][:2] == ["conf/x.conf", members[0][0]]
        gz = subprocess.run(["gzip", "-n", "-6"], input=cpio, capture_output=True,
                            check=True).stdout
        (mods / "initrd.img").write_bytes(gz)
        ids.append(repo.commit_dir(root, ref="r"))
    out = tmp_path / "d.delta"
    stats = generate_delta(repo, ids[0], ids[1], out)
    with open(out, "rb") as fh:
        hdr = read_header(fh)
    initrd = next(f for f in hdr.files if f["how"] == "gzip")
    assert len(initrd["dict"]) == 4 and initrd["clen"] < 1000
    assert stats.files_rebuilt == 1
    host = _host_with(tmp_path, repo, ids[0])
    assert apply_delta(host, out) == ids[1]
    assert host.verify_file(initrd["id"])


def test_bsdiff_wins_on_shifted_addresses(tmp_path: Path) -> None:
    # Like a kernel module rebuilt after a change: every embedded address moves a little.
    import struct

    rnd = random.Random(9)
    code = bytearray(rnd.randbytes(200_000))
    old, new = bytearray(code), bytearray(code)
    for off in range(0, len(code) - 8, 48):
        (addr,) = struct.unpack_from("<I", code, off)
        struct.pack_into("<I", new, off, (addr + 0x40) & 0xFFFFFFFF)
    repo = Repo.create(tmp_path / "repo")
    ids = []
    for v, body in ((1, old), (2, new)):
        root = tmp_path / f"t{v}"
        (root / "lib").mkdir(parents=True)
        (root / "lib/mod.ko").write_bytes(bytes(body))
        ids.append(repo.commit_dir(root, ref="r"))
    stats = generate_delta(repo, ids[0], ids[1], tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        hdr = read_header(fh)
    assert [f["how"] for f in hdr.files] == ["bsdiff"]
    assert stats.size < 40_000  # 4 000 changed addresses; plain compression: 200 kB
    host = _host_with(tmp_path, repo, ids[0])
    assert apply_delta(host, tmp_path / "d.delta") == ids[1]


def test_vmlinuz_xz_payload_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import atoll.delta.static as static

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    payload = _blob(4, 300_000)
    repo = Repo.create(tmp_path / "repo")
    ids = []
    for v, body in ((1, payload), (2, b"x86 changed " * 5 + payload)):
        stream = subprocess.run(["xz", "--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"],
                                input=body, capture_output=True, check=True).stdout
        root = tmp_path / f"t{v}"
        (root / f"usr/lib/modules/6.1.0-{v}-amd64").mkdir(parents=True)
        (root / f"usr/lib/modules/6.1.0-{v}-amd64/vmlinuz").write_bytes(
            b"MZ boot stub " + bytes([v]) * 500 + stream + b"\0" * 300)
        ids.append(repo.commit_dir(root, ref="r"))
    stats = generate_delta(repo, ids[0], ids[1], tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        hdr = read_header(fh)
    f = next(f for f in hdr.files if f["how"] == "xz")
    assert f["options"] == ["--check=crc32", "--x86", "--lzma2=dict=32MiB"]
    assert stats.files_rebuilt == 1 and stats.size < 3_000
    host = _host_with(tmp_path, repo, ids[0])
    assert apply_delta(host, tmp_path / "d.delta") == ids[1]
    assert host.verify_file(f["id"])


# -- format 2: segmented patches, bsdiff in batches, format 1 still read ---------------

def _small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 64 KiB with 128 KiB windows, patches by python (no zstd command)."""
    import atoll.delta.format as fmt
    import atoll.delta.static as static

    monkeypatch.setattr(fmt, "SEG_MAX", 64 << 10)
    monkeypatch.setattr(fmt, "SEG_BASE_MAX", 128 << 10)
    monkeypatch.setattr(static, "CLI_MIN", 1 << 40)


def _two(tmp_path: Path, old: dict[str, bytes], new: dict[str, bytes]) -> tuple[Repo, str, str]:
    repo = Repo.create(tmp_path / "repo")
    ids = []
    for v, files in ((1, old), (2, new)):
        root = tmp_path / f"t{v}"
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        ids.append(repo.commit_dir(root, ref="r"))
    return repo, ids[0], ids[1]


def test_large_file_patch_in_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_segments(monkeypatch)
    monkeypatch.setattr("atoll.delta.static.BSDIFF_MAX", 0)
    base = _blob(20, 600_000)
    new = bytearray(base[:300_000] + b"INSERTED" * 100 + base[300_000:])
    new[500_000:500_010] = b"CHANGED..."
    repo, a, b = _two(tmp_path, {"usr/lib/big.so": base}, {"usr/lib/big.so": bytes(new)})
    stats = generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        hdr = read_header(fh)
    f = next(f for f in hdr.files if f["how"] == "patch")
    assert hdr.format == 2 and len(f["segs"]) == 10
    assert all(s[1] <= 64 << 10 and s[3] <= 128 << 10 for s in f["segs"])
    assert stats.size < 30_000  # 600 kB of new content
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta", expect=(a, b)) == b
    assert host.verify_file(f["id"])


def test_initramfs_in_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import atoll.delta.static as static

    _small_segments(monkeypatch)
    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    old: dict[str, bytes] = {}
    new: dict[str, bytes] = {}
    for v, files in ((1, old), (2, new)):
        members = []
        for i in range(8):
            body = random.Random(v * 10 + i).randbytes(40_000)
            files[f"usr/lib/modules/6.1.0-{v}-amd64/m{i}.ko"] = body
            members.append((f"usr/lib/modules/6.1.0-{v}-amd64/m{i}.ko", body))
        cpio = _newc([("conf/x.conf", b"MODULES=most\n"), *members])
        files[f"usr/lib/modules/6.1.0-{v}-amd64/initrd.img"] = subprocess.run(
            ["gzip", "-n", "-6"], input=cpio, capture_output=True, check=True).stdout
    repo, a, b = _two(tmp_path, old, new)
    stats = generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        hdr = read_header(fh)
    initrd = next(f for f in hdr.files if f["how"] == "gzip")
    assert len(initrd["dict"]) == 8 and len(initrd["segs"]) == 5
    assert initrd["clen"] < 2000 and stats.files_rebuilt == 1
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta") == b
    assert host.verify_file(initrd["id"])


def test_bsdiff_applied_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import struct

    import atoll.delta._stream as stream
    import atoll.delta.format as fmt

    monkeypatch.setattr(fmt, "BSPATCH_IN_MEMORY", 0)
    monkeypatch.setattr(stream, "PIECE", 4096)
    code = bytearray(random.Random(9).randbytes(200_000))
    new = bytearray(code)
    for off in range(0, len(code) - 8, 48):
        (addr,) = struct.unpack_from("<I", code, off)
        struct.pack_into("<I", new, off, (addr + 0x40) & 0xFFFFFFFF)
    repo, a, b = _two(tmp_path, {"lib/mod.ko": bytes(code)}, {"lib/mod.ko": bytes(new)})
    generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        assert [f["how"] for f in read_header(fh).files] == ["bsdiff"]
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta") == b
    checkout(host, b, tmp_path / "out")
    assert (tmp_path / "out/lib/mod.ko").read_bytes() == bytes(new)


def _write_v1(repo: Repo, a: str, b: str, out: Path) -> None:
    """A format 1 delta as atoll wrote it before format 2: one solid frame, each patch
    one frame with the whole old file as dictionary."""
    import struct

    import zstandard

    from atoll.core import canonjson
    from atoll.delta._util import commit_objects

    have = {(o.id, o.kind) for o in commit_objects(repo, a)}
    new = [o for o in commit_objects(repo, b) if (o.id, o.kind) not in have]
    old_paths = {p: e.id for p, e in repo.walk(repo.read_commit(a).tree) if not e.is_dir}
    solid, patches, files, meta = bytearray(), bytearray(), [], []
    for o in sorted((o for o in new if o.kind != "file"), key=lambda o: o.kind == "commit"):
        data = repo.read_meta_object(o.id, o.kind)
        solid += data
        meta.append([o.id, o.kind, len(data)])
    for o in (o for o in new if o.kind == "file"):
        content = repo.read_file_content(o.id)
        entry = {"id": o.id, "meta": repo.file_meta(o.id).to_json(), "size": len(content)}
        base = old_paths.get(o.path)
        if base is not None and not os.path.islink(repo.object_path(o.id, "file")):
            d = zstandard.ZstdCompressionDict(repo.read_file_content(base),
                                              dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            frame = zstandard.ZstdCompressor(level=12, dict_data=d).compress(content)
            entry.update(how="patch", base=base, clen=len(frame))
            patches += frame
        else:
            entry["how"] = "raw"
            solid += content
        files.append(entry)
    header = zstandard.ZstdCompressor().compress(canonjson.dumps(
        {"format": 1, "from": a, "to": b, "meta": meta, "files": files}))
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(solid))
    out.write_bytes(b"ATOLL-DELTA-1\n" + struct.pack(">Q", len(header)) + header
                    + struct.pack(">Q", len(frame)) + frame + bytes(patches))


def test_format_1_delta_still_applies(tmp_path: Path,
                                      two_commits: tuple[Repo, str, str]) -> None:
    repo, a, b = two_commits
    _write_v1(repo, a, b, tmp_path / "v1.delta")
    with open(tmp_path / "v1.delta", "rb") as fh:
        hdr = read_header(fh)
    assert hdr.format == 1 and {f["how"] for f in hdr.files} == {"patch", "raw"}
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "v1.delta", expect=(a, b)) == b
    checkout(host, b, tmp_path / "out-host")
    checkout(repo, b, tmp_path / "out-src")
    assert _tree_listing(tmp_path / "out-host") == _tree_listing(tmp_path / "out-src")


def test_unknown_delta_format_is_refused(tmp_path: Path,
                                         two_commits: tuple[Repo, str, str]) -> None:
    # What an older host does with a newer delta: refuse it as corrupt (its client
    # then fetches the missing objects from the pack instead).
    repo, a, b = two_commits
    generate_delta(repo, a, b, tmp_path / "d.delta")
    data = (tmp_path / "d.delta").read_bytes()
    (tmp_path / "d3.delta").write_bytes(b"ATOLL-DELTA-3\n" + data[14:])
    host = _host_with(tmp_path, repo, a)
    with pytest.raises(CorruptObjectError):
        apply_delta(host, tmp_path / "d3.delta")


def _relocated(base: bytes) -> bytes:
    """``base`` with every 64th byte changed, as a module's relocations change it."""
    out = bytearray(base)
    for i in range(0, len(out), 64):
        out[i] = (out[i] + 1) & 0xFF
    return bytes(out)


def test_zstd_command_patch_made_only_when_it_can_beat_bsdiff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atoll.delta.static as static

    monkeypatch.setattr(static, "CLI_MIN", 100_000)
    levels: list[int] = []
    real = static._patch_cli

    def patch_cli(content: bytes, base: bytes, level: int) -> bytes:
        levels.append(level)
        return real(content, base, level)

    monkeypatch.setattr(static, "_patch_cli", patch_cli)
    base = _blob(21, 300_000)
    repo, a, b = _two(tmp_path, {"usr/lib/m.ko": base}, {"usr/lib/m.ko": _relocated(base)})
    generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        (f,) = read_header(fh).files
    assert f["how"] == "bsdiff"
    assert levels == [static.CLI_TRIAL_LEVEL]  # the trial, and no level-19 run
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta", expect=(a, b)) == b

    # Against a rival the trial may beat, the patch is made at the full level.
    levels.clear()
    new = base[:150_000] + b"INSERTED" * 10 + base[150_000:]
    made = static._patch_to_beat(new, base, 12, _Rival(1 << 30))
    assert made is not None and levels == [static.CLI_TRIAL_LEVEL, static.CLI_LEVEL]
    levels.clear()
    trial = len(static._patch(new, base, 12, static.CLI_TRIAL_LEVEL)[0])
    bound = trial * static.CLI_TRIAL_GAIN  # the smallest the full level may give
    levels.clear()
    assert static._patch_to_beat(new, base, 12, _Rival(int(bound) - 1)) is None
    assert levels == [static.CLI_TRIAL_LEVEL]
    levels.clear()
    assert static._patch_to_beat(new, base, 12, _Rival(int(bound) + 1)) is not None
    assert levels == [static.CLI_TRIAL_LEVEL, static.CLI_LEVEL]
    levels.clear()
    assert static._patch_to_beat(new, base, 12, None) is not None  # no rival: no trial
    assert levels == [static.CLI_LEVEL]


class _Rival:
    """A candidate of ``size`` bytes, as :class:`atoll.delta.static._Bsdiff` answers."""

    def __init__(self, size: int):
        self.size = size

    def below(self, n: float) -> bool:
        return self.size < n


def test_bsdiff_size_at_the_full_level_only_when_the_rough_one_cannot_decide(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import atoll.delta.static as static

    base = _blob(22, 200_000)
    diff = static._Bsdiff(_relocated(base), base)
    assert diff.exact is None and diff.rough > 0
    lo, hi = static.BSDIFF_ROUGH_RANGE
    assert diff.below(diff.rough / lo + 1) and not diff.below(diff.rough / hi)
    assert diff.exact is None  # both settled by the rough size
    assert diff.below(diff.rough * 10) and diff.size() == diff.rough
    exact = sum(len(zstandard.ZstdCompressor(level=static.BSDIFF_EST_LEVEL).compress(b))
                for b in diff.blocks)
    assert diff.below(exact + 1) is True and diff.below(exact) is False  # in the range
    assert diff.exact == exact and diff.size() == exact


def test_a_patch_wins_a_tie_with_bsdiff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atoll.delta.static as static

    base = _blob(23, 50_000)
    new = base[:25_000] + b"INSERTED" + base[25_000:]
    tie = len(static._patch(new, base, static.PATCH_LEVEL)[0])

    class Tied(_Rival):
        """bsdiff blocks exactly as large as the patch."""

        def __init__(self, content: bytes, old: bytes, _diff: object):
            super().__init__(tie)
            self.lengths = [0, 0, 0]

        def packed(self) -> bytes:
            raise AssertionError("bsdiff chosen on a tie")

    monkeypatch.setattr(static, "_Bsdiff", Tied)
    repo, a, b = _two(tmp_path, {"usr/lib/x.so": base}, {"usr/lib/x.so": new})
    generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        assert [f["how"] for f in read_header(fh).files] == ["patch"]


def _kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Repo, str, str]:
    """Two kernels with the same xz stream: the stub changed (as relocations change
    it) and so did the signature at the end."""
    import subprocess

    import atoll.delta.static as static

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    stream = subprocess.run(["xz", "--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"],
                            input=random.Random(5).randbytes(200_000), capture_output=True,
                            check=True).stdout
    stub = _blob(6, 30_000)
    return _two(tmp_path, {"boot/vmlinuz": stub + stream + b"SIGNATURE-1"},
                {"boot/vmlinuz": _relocated(stub) + stream + b"SIGNATURE-2"})


def test_a_compressed_file_mostly_unchanged_is_still_diffed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose xz stream did not change ships as a diff, not as a rebuild the
    host must run xz for."""
    repo, a, b = _kernels(tmp_path, monkeypatch)
    generate_delta(repo, a, b, tmp_path / "d.delta")
    with open(tmp_path / "d.delta", "rb") as fh:
        (f,) = read_header(fh).files
    assert f["how"] == "bsdiff"
    host = _host_with(tmp_path, repo, a)
    assert apply_delta(host, tmp_path / "d.delta", expect=(a, b)) == b


@pytest.mark.parametrize(("ratio", "chosen"), [(0.95, "bsdiff"), (0.85, "xz")])
def test_a_rebuild_must_be_a_tenth_smaller_than_the_best_diff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratio: float, chosen: str) -> None:
    import atoll.delta.static as static

    repo, a, b = _kernels(tmp_path, monkeypatch)
    sizes: list[int] = [1 << 30]  # first: a diff too large to compete

    class Sized:
        """bsdiff blocks of the size under test (they hold nothing)."""

        def __init__(self, content: bytes, old: bytes, _diff: object):
            self.n = sizes[-1]
            self.lengths = [0, 0, 0]

        def below(self, n: float) -> bool:
            return self.n < n

        def size(self) -> int:
            return self.n

        def packed(self) -> bytes:
            return zstandard.ZstdCompressor().compress(b"")

    monkeypatch.setattr(static, "_Bsdiff", Sized)
    monkeypatch.setattr(static, "_patch_to_beat", lambda *args: None)
    generate_delta(repo, a, b, tmp_path / "d1.delta")
    with open(tmp_path / "d1.delta", "rb") as fh:
        (f,) = read_header(fh).files
    assert f["how"] == "xz"
    rebuild = f["clen"]
    sizes.append(int(rebuild / ratio))  # the rebuild is `ratio` of the diff
    generate_delta(repo, a, b, tmp_path / "d2.delta")
    with open(tmp_path / "d2.delta", "rb") as fh:
        (f,) = read_header(fh).files
    assert f["how"] == chosen
