"""The agent orchestrator: concurrency, per-section timeouts, failing sections."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from atoll.monitor.access import parse_only_from
from atoll.monitor.agent import Agent, AgentConfig, SectionSpec
from atoll.monitor.facts import HostFacts, parse_host_status
from atoll.monitor.source import SectionSkipped
from tests.unit.test_monitor_conformance import check_agent_output, parse_agent_output

NOW = dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)


def facts() -> HostFacts:
    return parse_host_status({"booted": {"id": "a.0", "commit": "a" * 64, "version": "1.0",
                                         "ref": "r", "origin": "stable"}})


def agent(sections: list[SectionSpec], **cfg: object) -> Agent:
    return Agent(AgentConfig(**cfg), sections=sections, facts=facts,  # type: ignore[arg-type]
                 clock=lambda: NOW, hostname="db01")


def agent_json(out: str) -> dict[str, object]:
    rows = parse_agent_output(out)[("", "atoll_agent")].rows
    data: dict[str, object] = json.loads(rows[0][0])
    return data


def test_header_and_order() -> None:
    a = agent([SectionSpec("uptime", lambda: "<<<uptime>>>\n1.0 2.0\n")],
              only_from=parse_only_from("10.0.0.5,127.0.0.1"))
    out = a.output()
    assert out.startswith("<<<check_mk>>>\nVersion: atoll-")
    assert "Hostname: db01\n" in out and "OnlyFrom: 10.0.0.5 127.0.0.1\n" in out
    assert out.index("<<<uptime>>>") < out.index("<<<atoll_agent:sep(0)>>>") \
        < out.index("<<<local:sep(0)>>>")
    assert '0 "atoll version" - booted 1.0' in out
    assert '0 "atoll agent"' in out
    check_agent_output(out)
    a.close()


def test_slow_section_times_out_without_blocking_others() -> None:
    release, returned = threading.Event(), threading.Event()

    def slow() -> str:  # hung until the test ends (60 s: a deadline, should the test hang)
        release.wait(60)
        returned.set()
        return "<<<uptime>>>\n1.0 2.0\n"

    # mem's timeout is generous: only the slow section is meant to time out, however loaded
    # the machine; the output must not wait for the slow one to return
    a = agent([SectionSpec("slow", slow, 0.3),
               SectionSpec("mem", lambda: "<<<mem>>>\nMemTotal: 1 kB\n", 30.0)])
    try:
        out = a.output()
        assert not returned.is_set()  # the output came while the section was still hung
        assert "<<<mem>>>" in out and "<<<uptime>>>" not in out
        assert '1 "atoll agent"' in out and "slow: timeout (no answer within 0.3s)" in out
        status = {s["name"]: s["status"] for s in agent_json(out)["sections"]}  # type: ignore[attr-defined]
        assert status == {"slow": "timeout", "mem": "ok", "local": "ok"}
        # the hung section is not started a second time
        out = a.output()
        assert not returned.is_set()
        assert "slow: timeout (still running from an earlier request)" in out
    finally:
        release.set()
        a.close()
    check_agent_output(out.replace("<<<mem>>>\nMemTotal: 1 kB\n", ""))


def test_failing_section_is_reported_inside_the_output() -> None:
    def broken() -> str:
        raise OSError("No such file or directory: '/proc/diskstats'")

    a = agent([SectionSpec("diskstat", broken),
               SectionSpec("uptime", lambda: "<<<uptime>>>\n1.0 2.0\n")])
    out = a.output()
    a.close()
    assert "<<<diskstat>>>" not in out and "<<<uptime>>>\n1.0 2.0\n" in out
    assert "diskstat: error (OSError: No such file or directory: '/proc/diskstats')" in out
    check_agent_output(out)


def test_skipped_section_is_not_a_failure() -> None:
    def skip() -> str:
        raise SectionSkipped("PID 1 is 'init', not systemd")

    a = agent([SectionSpec("systemd_units", skip)])
    out = a.output()
    a.close()
    assert '0 "atoll agent"' in out and "not applicable (systemd_units)" in out
    assert agent_json(out)["sections"][0]["detail"] == "PID 1 is 'init', not systemd"  # type: ignore[index]


def test_local_checks_failing_still_give_a_local_section() -> None:
    def bad_facts() -> HostFacts:
        raise RuntimeError("boom")

    a = Agent(AgentConfig(), sections=[], facts=bad_facts, clock=lambda: NOW, hostname="h")
    out = a.output()
    a.close()
    assert '3 "atoll host status" - local checks failed: RuntimeError: boom' in out
    check_agent_output(out)


def test_sections_run_concurrently() -> None:
    barrier = threading.Barrier(6, timeout=5)  # passes only if all six run at the same time

    def meeting(name: str) -> SectionSpec:
        def run() -> str:
            barrier.wait()
            return f"<<<{name}>>>\n"
        return SectionSpec(name, run, 10.0)

    a = agent([meeting(f"s{i}") for i in range(6)])
    out = a.output()
    a.close()
    assert all(f"<<<s{i}>>>" in out for i in range(6))


def test_output_cache_is_single_flight() -> None:
    from atoll.monitor.server import OutputCache

    calls = []
    gate = threading.Event()

    def produce() -> str:
        calls.append(1)
        gate.wait(60)
        return "out"

    cache = OutputCache(produce, max_age=60)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for t in threads:
        t.start()
    # poll until one caller computes and the seven others wait for it (a fixed sleep
    # would let a late-starting thread merely read the cached value, testing nothing)
    try:
        deadline = time.monotonic() + 30
        while len(calls) != 1 or len(cache._cond._waiters) < 7:  # type: ignore[attr-defined]
            assert len(calls) <= 1, f"{len(calls)} callers computed the output"
            assert time.monotonic() < deadline, "the callers did not all arrive within 30 s"
            time.sleep(0.01)
    finally:
        gate.set()
    for t in threads:
        t.join(60)
    assert results == [b"out"] * 8 and len(calls) == 1
    assert cache.get() == b"out" and len(calls) == 1  # still fresh


def test_output_cache_recovers_from_a_failure() -> None:
    from atoll.monitor.server import OutputCache

    state = {"fail": True}

    def produce() -> str:
        if state["fail"]:
            raise RuntimeError("boom")
        return "ok"

    cache = OutputCache(produce, max_age=0)
    with pytest.raises(RuntimeError, match="boom"):
        cache.get()
    state["fail"] = False
    assert cache.get() == b"ok"
