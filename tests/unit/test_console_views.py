"""The console's view shaping: fixed-size charts whatever the data, bounded lists, and the agent
view's summary/reason/tool results taken from stored state."""

from __future__ import annotations

from service.console import pages, views
from service.state.model import CallSnapshot, SentimentPoint, TranscriptTurn


def _coords(points: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in points.split())]


def test_polyline_stays_inside_its_box_and_spans_the_width() -> None:
    coords = _coords(views.polyline([0.0, 0.5, 1.0, 7.0, -3.0], 120, 24))
    assert [x for x, _ in coords] == [0.0, 30.0, 60.0, 90.0, 120.0]
    assert [y for _, y in coords] == [24.0, 12.0, 0.0, 0.0, 24.0]  # 1 at the top, clamped
    assert views.polyline([], 120, 24) == ""
    assert _coords(views.polyline([0.25], 120, 24)) == [(0.0, 18.0), (120.0, 18.0)]


def _snapshot(points: int, turns: int) -> CallSnapshot:
    return CallSnapshot(
        call_id="CA-1",
        fields={"provider": "twilio", "from": "+*******0123", "state": "listening", "started_at": "1000.0",
                "replica": "r-1", "cost_usd": "0.012345", "escalation_status": "delivered",
                "escalation_trigger": "explicit_request", "escalation_id": "E-1"},
        transcript=[TranscriptTurn("caller" if i % 2 == 0 else "bot", f"turn {i} about my bill", 1000.0 + i, i)
                    for i in range(turns)],
        sentiment=[SentimentPoint(ts=1000.0 + i, turn=i, score=i / max(1, points), language="en") for i in range(points)],
        events=[{"kind": "barge_in", "ts": 1001.0, "seq": 1, "heard_ms": 1200, "sent_ms": 3000},
                {"kind": "tool_call", "ts": 1002.0, "seq": 2, "name": "lookup_order", "result": '{"status":"shipped"}'},
                {"kind": "escalation", "ts": 1003.0, "seq": 3, "trigger": "explicit_request", "reason": "asked for a human"}],
    )


def test_call_row_carries_every_column_and_a_bounded_sparkline() -> None:
    row = views.call_row(_snapshot(points=300, turns=4), now=1065.4)
    assert row["duration_s"] == 65 and row["language"] == "en" and row["cost_usd"] == 0.0123
    assert row["provider"] == "twilio" and row["caller"] == "+*******0123" and row["replica"] == "r-1"
    assert len(row["spark"].split()) == views.SPARK_POINTS
    assert row["frustration"] == round(299 / 300, 2)


def test_call_detail_caps_lists_and_keeps_events() -> None:
    detail = views.call_detail(_snapshot(points=500, turns=450), now=2000.0)
    assert len(detail["transcript"]) == views.TRANSCRIPT_TURNS
    assert detail["transcript"][-1]["text"] == "turn 449 about my bill"
    assert len(detail["chart"].split()) == views.CHART_POINTS
    assert [e["kind"] for e in detail["events"]] == ["barge_in", "tool_call", "escalation"]
    assert detail["escalation_detail"]["status"] == "delivered"


def test_agent_view_has_summary_reason_and_tool_results_escaped_in_html() -> None:
    snap = _snapshot(points=3, turns=2)
    snap.transcript.append(TranscriptTurn("caller", "<script>alert(1)</script> my bill is wrong", 1010.0, 9))
    view = views.agent_view(snap, "E-1")
    assert view["reason"] == "asked for a human"
    assert view["tool_results"] == [{"name": "lookup_order", "result": '{"status":"shipped"}'}]
    assert "bill" in view["summary"] and "Escalated:" in view["summary"]
    page = pages.agent(view)
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_row_snapshot_from_raw_replies_skips_bad_points() -> None:
    raw_hash = {b"provider": b"telnyx", b"from": b"+*******4567", b"started_at": b"100.0", b"replica": b"r-2"}
    good = b'{"ts":101.0,"turn":1,"score":0.4,"language":"ja","seq":3}'
    raw_points = [good, good, b"not json", b'{"ts":1,"turn":2,"score":"high"}', b"[1,2]"]
    snap = views.row_snapshot("CA-9", raw_hash, raw_points)
    assert snap is not None and [p.score for p in snap.sentiment] == [0.4]
    row = views.call_row(snap, now=130.0)
    assert row["provider"] == "telnyx" and row["language"] == "ja" and row["duration_s"] == 30
    assert views.row_snapshot("CA-gone", {}, [good]) is None


def test_shared_snapshots_build_once_per_period_for_all_clients() -> None:
    import asyncio

    from service.console.routes import SharedSnapshots

    async def scenario() -> None:
        builds = 0

        async def build() -> dict[str, int]:
            nonlocal builds
            builds += 1
            return {"n": builds}

        shared = SharedSnapshots()
        clients = [asyncio.ensure_future(shared.get("/feed", build)) for _ in range(10)]
        assert [await c for c in clients] == [{"n": 1}] * 10 and builds == 1
        for n in range(SharedSnapshots.MAX_FEEDS + 50):  # many distinct feeds: the table stays bounded
            await shared.get(f"/feed/{n}", build)
        assert len(shared._entries) <= SharedSnapshots.MAX_FEEDS

    asyncio.run(scenario())
