"""mk_mysql sections per database app, with a fake container exec."""

from __future__ import annotations

from collections.abc import Sequence

from atoll.monitor.mysql import CLIENT_CNF, mysql_instance_sections
from tests.unit.test_monitor_conformance import _instances, check_agent_output, parse_agent_output

STATUS = ("Aborted_clients\t0\nConnections\t31\nMax_used_connections\t3\nThreads_connected\t1\n"
          "Threads_running\t1\nUptime\t600\nmax_connections\t151\n"
          "version\t10.11.6-MariaDB-0+deb12u1\n")
CAPACITY = "information_schema\t212992\t0\nmysql\t11108352\t0\nshop\t52412416\t4194304\n"


class FakeExec:
    def __init__(self, ping: tuple[int, str], slave: str = "") -> None:
        self.ping = ping
        self.slave = slave
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], merge: bool) -> tuple[int, str]:
        self.calls.append(list(argv))
        if argv[0] == "mysqladmin":
            assert merge  # mk_mysql: mysqladmin ping 2>&1
            return self.ping
        query = argv[-1]
        if query.startswith("show global status"):
            return 0, STATUS
        if query.startswith("SELECT table_schema"):
            return 0, CAPACITY
        if query.startswith("show slave status"):
            return 0, self.slave
        raise AssertionError(argv)


def test_alive_instance_writes_four_sections() -> None:
    ex = FakeExec((0, "mysqld is alive\n"))
    out = mysql_instance_sections("shop", ex)
    s = check_agent_output(out)
    assert [n for _, n in s] == ["mysql_ping", "mysql", "mysql_capacity", "mysql_slave"]
    assert s[("", "mysql_ping")].rows == [["[[shop]]"], ["mysqld", "is", "alive"]]
    assert ["Threads_connected", "1"] in s[("", "mysql")].rows
    assert _instances(s[("", "mysql_capacity")].rows)["shop"][2] == ["shop", "52412416",
                                                                    "4194304"]
    # credentials only through the option file, never on the command line
    for argv in ex.calls:
        assert f"--defaults-extra-file={CLIENT_CNF}" in argv
        assert not any(a.startswith(("-p", "--password")) for a in argv)
    assert ex.calls[1][:3] == ["mysql", f"--defaults-extra-file={CLIENT_CNF}", "-sN"]
    assert ex.calls[3][2] == "-s"


def test_database_down_only_ping_says_so() -> None:
    msg = ("mysqladmin: connect to server at 'localhost' failed\n"
           "error: 'Can't connect to local server through socket '/run/mysqld/mysqld.sock' (2)'\n")
    out = mysql_instance_sections("shop", FakeExec((1, msg)))
    s = check_agent_output(out)
    assert list(s) == [("", "mysql_ping")]
    assert "failed" in out and "[[shop]]" in out


def test_wrong_credentials() -> None:
    msg = ("mysqladmin: connect to server at 'localhost' failed\n"
           "error: 'Access denied for user 'monitor'@'localhost' (using password: YES)'\n")
    # mysqladmin exits 0 on "Access denied" (the server runs)
    out = mysql_instance_sections("shop", FakeExec((0, msg)))
    assert "Access denied" in out and "<<<mysql>>>" not in out


def test_replica_status() -> None:
    slave = ("*************************** 1. row ***************************\n"
             "Slave_IO_State: Waiting for master to send event\n"
             "Slave_IO_Running: Yes\nSlave_SQL_Running: Yes\nSeconds_Behind_Master: 0\n"
             "Relay_Log_Space: 1234\n")
    out = mysql_instance_sections("shop", FakeExec((0, "mysqld is alive\n"), slave))
    rows = parse_agent_output(out)[("", "mysql_slave")].rows
    assert ["Slave_IO_Running:", "Yes"] in rows
    check_agent_output(out)


def test_two_instances_concatenate() -> None:
    out = mysql_instance_sections("shop", FakeExec((0, "mysqld is alive\n")))
    out += mysql_instance_sections("crm", FakeExec((1, "mysqladmin: connect failed\n")))
    s = check_agent_output(out)
    assert set(_instances(s[("", "mysql_ping")].rows)) == {"shop", "crm"}
