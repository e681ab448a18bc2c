"""Confinement proofs with real Docker: even root inside an app's container cannot read
the host's /etc/shadow, another app's volume, or the Docker socket."""

from __future__ import annotations

import secrets
from pathlib import Path

import docker

from atoll import apps
from atoll.apps.plan import container_name
from tests.integration.apps_fixtures import *  # noqa: F403  (fixtures)
from tests.integration.apps_fixtures import AppEnv

BUILTIN = Path(apps.__file__).parent / "specs" / "mariadb.yaml"
SEARCH = ["/etc", "/var", "/run", "/tmp", "/srv", "/mnt", "/home", "/root", "/opt", "/media"]


def test_app_cannot_reach_host_shadow_other_volume_or_docker_socket(app_env: AppEnv) -> None:
    env = app_env
    a, b = env.name("a"), env.name("b")
    apps.install(env.sysroot, a, spec_file=BUILTIN, runtime=env.runtime)
    inst_b = apps.install(env.sysroot, b, spec_file=BUILTIN, runtime=env.runtime)
    token = secrets.token_hex(16)
    (inst_b.paths.volume("data") / "token.txt").write_text(token)

    def sh(script: str, user: str = "0") -> tuple[int, bytes]:
        res = env.runtime.exec(container_name(a), ["sh", "-c", script], user=user)
        return res.exit_code, res.stdout + res.stderr

    # The host's shadow file: not what the container sees as /etc/shadow, nor anywhere else.
    host_shadow = Path("/etc/shadow").read_bytes()
    root_hash = next(ln for ln in host_shadow.splitlines() if ln.startswith(b"root:"))
    code, out = sh("cat /etc/shadow")
    assert code == 0 and out != host_shadow and root_hash not in out
    code, out = sh("grep -rsF '" + root_hash.decode() + "' " + " ".join(SEARCH) + "; echo end")
    assert root_hash not in out
    # The other app's volume: its token is nowhere in this container's filesystem.
    code, out = sh(f"grep -rlsF {token} {' '.join(SEARCH)}; echo end")
    assert token.encode() not in out and out.strip().endswith(b"end")
    # The Docker socket: not mounted, and nothing listens for Docker inside.
    assert sh("test -e /var/run/docker.sock || test -e /run/docker.sock")[0] != 0
    code, out = sh("find / -type s 2>/dev/null; echo end")
    sockets = set(out.split()) - {b"end"}
    assert sockets <= {b"/run/mysqld/mysqld.sock"}, sockets
    # And no way out: no capabilities, no-new-privileges, seccomp filter on, root fs read-only,
    # mounting is refused even to root.
    code, out = sh("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
    status = dict(line.split(b":\t") for line in out.strip().splitlines())
    assert status[b"CapEff"] == status[b"CapBnd"] == b"0000000000000000"
    assert status[b"NoNewPrivs"] == b"1" and status[b"Seccomp"] == b"2"
    assert sh("touch /usr/x")[0] != 0
    assert sh("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m")[0] != 0

    # The engine's view agrees: only its own directories mounted, limits set.
    client = docker.DockerClient(base_url=env.url)
    attrs = client.api.inspect_container(container_name(a))
    hc = attrs["HostConfig"]
    own = str(env.sysroot / "var/lib/atoll/apps" / a) + "/"
    assert attrs["Mounts"] and all(m["Source"].startswith(own) for m in attrs["Mounts"])
    assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert not any("unconfined" in o for o in hc["SecurityOpt"]) and not hc["Privileged"]
    assert hc["Memory"] == 1024**3 and hc["NanoCpus"] == 10**9 and hc["PidsLimit"] == 512
    nets = attrs["NetworkSettings"]["Networks"]
    assert list(nets) == [f"atoll-{a}"]
    assert client.networks.get(f"atoll-{a}").attrs["Internal"] is True
    # Separate networks: app a cannot even resolve or route to app b.
    b_ip = client.api.inspect_container(container_name(b))["NetworkSettings"]["Networks"][
        f"atoll-{b}"
    ]["IPAddress"]
    code, _ = sh(f"mysql -h {b_ip} --connect-timeout=2 -uroot -e 'SELECT 1'", user="999")
    assert code != 0
