"""One URL check for update servers and the FleetLock server (review of issue 13:
``remote add`` stored ``...?a=b/``, ``#frag``, ``http://[::1``, port 99999, and
``user:pw@`` in a world-readable remote.json; each failed only later, with exit 6)."""

from __future__ import annotations

import json
import stat

import pytest

from atoll.cli import main
from atoll.core.errors import InputError
from atoll.core.urls import check_http_url
from atoll.fleet.client import FleetLockClient
from tests.unit.test_tuf_simulator import Sim

GOOD = [
    ("http://127.0.0.1:18431/", "http://127.0.0.1:18431/"),
    ("https://updates.example.com/site", "https://updates.example.com/site/"),
    ("HTTPS://cdn.example.com/a/b/", "https://cdn.example.com/a/b/"),
    ("http://[::1]:8080", "http://[::1]:8080/"),
    ("http://db_01.lan:65535/x", "http://db_01.lan:65535/x/"),
]
BAD = [
    ("http://127.0.0.1:18431/?a=b", "has a query"),
    ("http://127.0.0.1:18431/#frag", "has a fragment"),
    ("http://127.0.0.1:18431/?", "has a query"),
    ("http://[::1", "is not a valid URL"),
    ("http://[fe80::zz]/", "is not a valid URL"),
    ("http://127.0.0.1:99999/", "is not a valid URL"),
    ("http://127.0.0.1:0/", "port must be"),
    ("http://127.0.0.1:/", "port must be"),
    ("http://h:abc/", "is not a valid URL"),
    ("http://user:pw@127.0.0.1/", "contains credentials"),
    ("http://user@127.0.0.1/", "contains credentials"),
    ("ftp://user:pw@127.0.0.1/", "is not an http"),
    ("http://user:pw@[::1/", "is not a valid URL"),
    ("ftp://127.0.0.1/", "is not an http"),
    ("http:/127.0.0.1/", "is not an http"),
    ("127.0.0.1:8080", "is not an http"),
    ("http:///path", "has no host"),
    ("http://exa mple.com/", "whitespace or control"),
    ("http://example.com/\x00", "whitespace or control"),
    ("http://example.com/\x85", "whitespace or control"),
    ("http://-bad.example/", "is not a host name"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("url", "normal"), GOOD)
def test_good_urls(url: str, normal: str) -> None:
    assert check_http_url(url) == normal


@pytest.mark.parametrize(("url", "why"), BAD)
def test_bad_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(InputError, match=why) as exc:
        check_http_url(url, "URL")
    assert ":pw@" not in exc.value.brief  # user:password@ shows as ***@
    with pytest.raises(InputError, match=why):
        FleetLockClient(url)  # the FleetLock client uses the same check


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return Sim(tmp_path_factory.mktemp("urls"))  # a host with the remote "origin", root.json


@pytest.mark.parametrize("option", ["URL", "--metadata-url", "--targets-url"])
@pytest.mark.parametrize(("url", "why"), BAD[:12])
def test_remote_add_refuses_them_with_exit_2(host: Sim, option: str, url: str,
                                             why: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    sim = host
    good = "http://127.0.0.1:9/"
    argv = ["--sysroot", str(sim.sysroot), "remote", "add", "new",
            url if option == "URL" else good, "--root", str(sim.tmp / "root.json")]
    if option != "URL":
        argv += [option, url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and option in err
    assert "pw" not in err  # credentials are never echoed
    assert not (sim.sysroot / "atoll/state/remotes/new").exists()


def test_a_stored_remote_never_holds_credentials(host: Sim) -> None:
    sim = host
    raw = json.loads((sim.sysroot / "atoll/state/remotes/origin/remote.json").read_text())
    assert "@" not in json.dumps(raw)
    mode = (sim.sysroot / "atoll/state/remotes/origin/remote.json").stat().st_mode
    assert stat.S_IMODE(mode) & 0o044  # world-readable: so no secrets may go in
