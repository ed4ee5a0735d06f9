"""Just-in-time playout: lead, batching, order, sample alignment, rewind to the heard sample,
acknowledgement, bounds and underrun counting; and the ledger's rewind it relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.call.playback import HeardPosition, PlaybackLedger
from service.call.playout import PlayoutBuffer


def test_lead_zero_sends_everything_at_once_in_order() -> None:
    buf = PlayoutBuffer(8, 0)
    buf.push("a", b"1" * 800)
    buf.push("b", b"2" * 80)
    assert buf.take(5000.0) == [("a", b"1" * 800), ("b", b"2" * 80)]
    assert buf.pending_bytes == 0 and buf.held_bytes == 880 and buf.due_in_ms(0.0) is None


def test_lead_caps_what_is_queued_at_the_provider() -> None:
    buf = PlayoutBuffer(8, 200)
    buf.push("a", bytes(8 * 1000))  # 1 s of G.711
    first = buf.take(0.0)
    assert [len(c) for _i, c in first] == [8 * 200]
    assert buf.take(150.0) == []  # room 50 ms < the 100 ms batch
    assert buf.due_in_ms(150.0) == pytest.approx(50.0)
    second = buf.take(100.0)
    assert [len(c) for _i, c in second] == [8 * 100]
    assert buf.pending_bytes == 8 * 700


def test_chunks_never_split_a_sample() -> None:
    buf = PlayoutBuffer(32, 50, sample_bytes=2)  # L16 16 kHz
    buf.push("a", bytes(101))  # an odd tail waits for its second byte
    assert sum(len(c) for _i, c in buf.take(0.0)) == 100
    buf.push("a", bytes(1))
    assert [len(c) for _i, c in buf.take(0.0)] == [2]


def test_rewind_resends_from_the_heard_sample() -> None:
    buf = PlayoutBuffer(8, 0)
    audio = bytes(range(256)) * 4
    buf.push("a", audio)
    buf.push("b", b"\x07" * 100)
    buf.take(0.0)
    buf.rewind([HeardPosition("a", 30, 128, 243), HeardPosition("b", 0, 12, 0)])
    again = buf.take(0.0)
    assert again == [("a", audio[243:]), ("b", b"\x07" * 100)]


def test_rewind_aligns_down_and_never_before_acknowledged_audio() -> None:
    buf = PlayoutBuffer(32, 0, sample_bytes=2)
    buf.push("a", bytes(range(200)))
    buf.take(0.0)
    buf.acknowledge("a", 64)
    assert buf.held_bytes == 136
    buf.rewind([HeardPosition("a", 1, 6, 51)])  # 51 -> 50, but 64 is already confirmed heard
    assert buf.take(0.0) == [("a", bytes(range(64, 200)))]


def test_acknowledge_forgets_earlier_items_and_finished_ones() -> None:
    buf = PlayoutBuffer(8, 0)
    for name in "abc":
        buf.push(name, bytes(80))
    buf.take(0.0)
    buf.acknowledge("b", 80)
    assert buf.received_bytes("a") == 0 and buf.received_bytes("b") == 0  # gone
    assert buf.received_bytes("c") == 80 and buf.held_bytes == 80
    buf.acknowledge("c", 80)  # the last item may still grow: kept, empty
    assert buf.held_bytes == 0 and buf.received_bytes("c") == 80
    buf.push("c", bytes(8))
    assert buf.take(0.0) == [("c", bytes(8))]


def test_memory_is_bounded_and_overflow_counted() -> None:
    buf = PlayoutBuffer(8, 200, max_ms=100)
    assert buf.push("a", bytes(800))
    assert not buf.push("a", bytes(8))
    assert buf.overflowed_bytes == 8 and buf.held_bytes == 800


def test_drop_forgets_everything() -> None:
    buf = PlayoutBuffer(8, 200)
    buf.push("a", bytes(8000))
    buf.take(0.0)
    buf.drop()
    assert buf.held_bytes == 0 and buf.pending_bytes == 0 and buf.take(0.0) == []


def test_underrun_counted_only_when_audio_waited_while_the_queue_ran_dry() -> None:
    buf = PlayoutBuffer(8, 200)
    buf.push("a", bytes(8 * 1000))
    buf.take(0.0)  # a fresh start is not an underrun
    assert buf.underruns == 0
    buf.take(120.0)  # on time
    buf.take(0.0)  # late: the provider had nothing left
    assert buf.underruns == 1
    buf.drop()
    buf.push("b", bytes(80))
    buf.take(0.0)
    assert buf.underruns == 1


@pytest.mark.parametrize("bad", [dict(bytes_per_ms=0, lead_ms=0), dict(bytes_per_ms=8, lead_ms=-1),
                                 dict(bytes_per_ms=8, lead_ms=0, sample_bytes=0)])
def test_arguments_are_validated(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PlayoutBuffer(**bad)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 400)), min_size=1, max_size=30),
       st.integers(0, 400), st.lists(st.floats(0.0, 500.0), min_size=1, max_size=40))
def test_everything_pushed_comes_out_once_in_order(pushes: list[tuple[str, int]], lead: int,
                                                   aheads: list[float]) -> None:
    buf = PlayoutBuffer(8, lead)
    expected: list[tuple[str, bytes]] = []
    counter = 0
    for item, size in pushes:
        data = bytes((counter + i) % 251 for i in range(size))
        counter += size
        buf.push(item, data)
        if expected and expected[-1][0] == item:
            expected[-1] = (item, expected[-1][1] + data)
        else:
            expected.append((item, data))
    out: list[tuple[str, bytes]] = []
    for ahead in [*aheads, 0.0] + [0.0] * 2000:
        for item, chunk in buf.take(ahead):
            assert lead == 0 or len(chunk) <= lead * 8
            if out and out[-1][0] == item:
                out[-1] = (item, out[-1][1] + chunk)
            else:
                out.append((item, chunk))
        if not buf.pending_bytes:
            break
    assert out == expected


def test_ledger_rewind_counts_resent_audio_from_the_heard_position() -> None:
    ledger = PlaybackLedger(8)
    ledger.on_audio_sent("a", 800, now=0.0)  # 100 ms
    ledger.on_mark_echoed("cb1", now=0.1)
    ledger.on_audio_sent("a", 800, now=0.1)
    [position] = ledger.clear(now=0.15)
    assert (position.heard_ms, position.heard_bytes, position.sent_ms) == (150, 1200, 200)
    ledger.rewind("a", position.heard_bytes)
    assert ledger.heard("a", 5.0).heard_ms == 150  # nothing resent yet: nothing more heard
    ledger.on_audio_sent("a", 400, now=1.0)  # the rest, resumed at t=1.0
    assert ledger.heard("a", 1.025).heard_ms == 175
    assert ledger.heard("a", 9.0) == HeardPosition("a", 200, 200, 1600)
    assert ledger.ahead_ms(1.0) == pytest.approx(50.0)


def test_unsent_items_are_the_ones_held_behind_the_lead() -> None:
    buf = PlayoutBuffer(8, 100)
    buf.push("a", bytes(8000))
    buf.push("b", bytes(800))
    buf.take(0.0)
    assert buf.unsent_items() == [("b", 800)]
    buf.drop()
    assert buf.unsent_items() == []
