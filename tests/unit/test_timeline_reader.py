"""The timeline's reader on hand-made traces, and the recorder's off state."""

from __future__ import annotations

from mpicoll.bench.timeline import format_summary, stragglers, summarize

from mpicoll import timeline


def _call(pid: int, seq: int, ts: float, dur: float = 100.0, name: str = "allreduce") -> dict:
    return {"name": name, "cat": "collective", "ph": "X", "ts": ts, "dur": dur, "pid": pid, "tid": 1,
            "args": {"comm": 0, "seq": seq, "nested": False, "bytes": 4000, "algorithm": "ring"}}


def test_off_records_nothing_and_costs_a_shared_no_op():
    assert not timeline.recording()
    assert timeline.span("wire") is timeline.span("compress")  # one shared no-op object, no allocation
    with timeline.span("wire"):
        timeline.annotate(algorithm="ring")


def test_stragglers_name_the_rank_that_made_the_others_wait():
    events = []
    for seq in range(10):
        late = 2 if seq % 2 == 0 else 0  # rank 2 late by 5 ms in half the calls; rank 0 by 0.01 ms otherwise
        for pid in range(3):
            ts = 1000.0 * seq + (5000.0 if pid == late and late == 2 else 10.0 if pid == late else 0.0)
            events.append(_call(pid, seq, ts))
    events.append(_call(0, 99, 0.0))  # seen on one rank only: ignored
    result = stragglers(events, 3)
    assert result["calls"] == 10
    top = result["ranks"][0]
    assert (top["rank"], top["last_count"], top["median_late_ms"]) == (2, 5, 5.0)
    assert result["ranks"][1]["rank"] == 0 and result["ranks"][1]["median_late_ms"] == 0.01


def test_summary_tables_and_percentiles():
    events = [_call(0, i, 1000.0 * i, dur=1000.0 * (i + 1)) for i in range(100)]
    events.append({"name": "wire", "cat": "phase", "ph": "X", "ts": 0.0, "dur": 50.0, "pid": 0, "tid": 1,
                   "args": {"in": "allreduce"}})
    summary = summarize(events, {"ranks": 1})
    row = summary["tables"]["collective"][0]
    assert row["count"] == 100 and row["p50_ms"] == 50.5 and row["max_ms"] == 100.0
    assert row["bytes"] == 400000 and row["algorithms"] == "ring"
    assert summary["tables"]["phase"][0]["name"] == "allreduce / wire"
    assert "| allreduce |" in format_summary(summary)
