"""Zero failed requests during a rolling update when a GPU is spare (maxSurge 1, maxUnavailable 0).

Two real `deepseek-worker --model tiny` processes behind Debian's nginx (a weighted upstream, reloaded
as endpoints change), a client at 10 chat completions per second for the whole sequence, and one long
stream on the old worker that is in flight when it gets SIGTERM. See rolling.py for the sequence; the
60-second version with figures is benchmarks/rolling_update_nginx.py (docs/benchmarks.md).

Without nginx this skips with the reason outside CI and fails in CI (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepseek_worker.testing.rolling import Timings, markdown, run_rollout

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
RATE = 10


def test_rolling_update_behind_nginx_fails_no_request(nginx_binary: str, tmp_path: Path) -> None:
    report = run_rollout(tmp_path, nginx_binary, rate=RATE, timings=Timings(old_alone=2, both=3, new_alone=2),
                         stream_tokens=1000, drain_timeout=120)
    summary = markdown(report, RATE)
    print(summary)

    # Every client request, in every phase, got a 2xx with a completion: no 5xx, no connection error.
    assert len(report.samples) >= RATE * 7, summary  # the phases' own seconds alone are 7 s of traffic
    assert not report.failed, summary
    assert report.retried == 0, summary  # and not because nginx retried them: no upstream ever refused one
    # Both workers actually served the client (nginx's $upstream_addr), and nothing else did.
    assert report.per_upstream[report.old_addr] > 0 and report.per_upstream[report.new_addr] > 0, summary
    assert set(report.per_upstream) == {report.old_addr, report.new_addr}, summary
    # The old worker had the long stream (at least) in flight at SIGTERM, drained it and exited 0.
    assert report.stream.upstream == report.old_addr, summary
    assert report.stream_running_at_sigterm, f"the long stream ended before SIGTERM: raise stream_tokens\n{summary}"
    assert (report.inflight_at_sigterm or 0) >= 1, f"{report.drain_log!r}\n{summary}"
    assert report.stream.ok, f"{report.stream.error} {report.stream.events[-3:]}\n{summary}"
    assert report.old_exit == 0, summary
