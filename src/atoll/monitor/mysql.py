"""MySQL/MariaDB sections in the format of Checkmk's ``mk_mysql`` plugin.

For each database app (a container labelled ``io.atoll.app=<app>`` and
``io.atoll.role=database``) the agent runs, inside the container, what mk_mysql
runs on a host, and writes the same sections with the app name as instance::

    <<<mysql_ping>>>      [[app]] + "mysqld is alive", or mysqladmin's error
    <<<mysql>>>           [[app]] + "name<TAB>value" of global status and variables
    <<<mysql_capacity>>>  [[app]] + "schema<TAB>size<TAB>free" per schema
    <<<mysql_slave>>>     [[app]] + "show slave status\\G" (empty on a primary)

As in mk_mysql, a failed ping writes only the ``mysql_ping`` section of that
instance; unlike mk_mysql, so does a ping that exits 0 without "mysqld is alive"
(``Access denied``: mysqladmin exits 0 when the server runs), instead of
following it with empty sections. Credentials come from ``/run/secrets/mysql-client.cnf`` inside the
container (``--defaults-extra-file``): a password never appears on a command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import docker.errors

from atoll.core.errors import RuntimeBackendError
from atoll.monitor.docker_sections import (
    APP_LABEL,
    DEFAULT_DOCKER_URL,
    DOCKER_ERRORS,
    ROLE_LABEL,
    docker_client,
)
from atoll.monitor.source import SectionSkipped

__all__ = [
    "CLIENT_CNF",
    "ContainerExec",
    "docker_exec",
    "mysql_instance_sections",
    "mysql_section",
]

CLIENT_CNF = "/run/secrets/mysql-client.cnf"
_DEFAULTS = f"--defaults-extra-file={CLIENT_CNF}"

# (argv, merge stderr into the output) -> (exit code, output)
ContainerExec = Callable[[Sequence[str], bool], tuple[int, str]]

STATUS_QUERY = "show global status ; show global variables ;"
CAPACITY_QUERY = (
    "SELECT table_schema, sum(data_length + index_length), sum(data_free)"
    " FROM information_schema.TABLES GROUP BY table_schema"
)
SLAVE_QUERY = "show slave status\\G"


def _body(text: str) -> str:
    text = text.rstrip("\n")
    return text + "\n" if text else ""


def mysql_instance_sections(instance: str, run_in_container: ContainerExec) -> str:
    """The four mk_mysql sections of one instance (only mysql_ping if it is down)."""
    head = f"[[{instance}]]\n"
    code, out = run_in_container(["mysqladmin", _DEFAULTS, "ping"], True)
    ping = _body(out) or ("mysqld is alive\n" if code == 0 else f"mysqladmin exit code {code}\n")
    text = "<<<mysql_ping>>>\n" + head + ping
    if code != 0 or "mysqld is alive" not in ping:
        # mysqladmin exits 0 on "Access denied" (the server runs): mk_mysql would go on
        # and print empty sections; the ping text already says what is wrong.
        return text
    _, status = run_in_container(["mysql", _DEFAULTS, "-sN", "-e", STATUS_QUERY], False)
    text += "<<<mysql>>>\n" + head + _body(status)
    _, capacity = run_in_container(["mysql", _DEFAULTS, "-sN", "-e", CAPACITY_QUERY], False)
    text += "<<<mysql_capacity>>>\n" + head + _body(capacity)
    _, slave = run_in_container(["mysql", _DEFAULTS, "-s", "-e", SLAVE_QUERY], False)
    text += "<<<mysql_slave>>>\n" + head + _body(slave)
    return text


def docker_exec(container: Any) -> ContainerExec:
    """A :data:`ContainerExec` running commands in a docker-py container."""

    def run(argv: Sequence[str], merge: bool) -> tuple[int, str]:
        if merge:
            code, output = container.exec_run(list(argv))
            return int(code), (output or b"").decode("utf-8", "replace")
        code, (stdout, _stderr) = container.exec_run(list(argv), demux=True)
        return int(code), (stdout or b"").decode("utf-8", "replace")

    return run


def mysql_section(url: str = DEFAULT_DOCKER_URL, timeout: float = 10.0) -> str:
    """mk_mysql sections for every database app on this host.

    Raises:
        SectionSkipped: no database app, or Docker is not reachable (the docker
            section reports that).
    """
    try:
        client = docker_client(url, timeout)
    except RuntimeBackendError as exc:
        raise SectionSkipped(f"no database apps known: {exc.brief}") from exc
    try:
        found = client.containers.list(
            all=True, filters={"label": [APP_LABEL, f"{ROLE_LABEL}=database"]}
        )
        if not found:
            raise SectionSkipped("no database app on this host")
        out = ""
        for c in sorted(found, key=lambda c: (c.labels.get(APP_LABEL, ""), c.name)):
            app = c.labels.get(APP_LABEL) or c.name
            if c.status != "running":
                out += f"<<<mysql_ping>>>\n[[{app}]]\n"
                out += f"container {c.name} of app {app} is not running (status {c.status})\n"
                continue
            try:
                out += mysql_instance_sections(app, docker_exec(c))
            except docker.errors.NotFound:
                continue  # removed since it was listed
            except DOCKER_ERRORS as exc:
                out += f"<<<mysql_ping>>>\n[[{app}]]\ndocker exec in {c.name} failed: {exc}\n"
        return out
    finally:
        client.close()
