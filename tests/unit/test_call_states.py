"""Every call-core state object walked exhaustively, as h11 tests its ConnectionState: every
(state, event) pair either lands where the table says or raises ``InvalidTransition`` with the state
unchanged, and the objects' methods keep their data consistent with their state."""

from __future__ import annotations

import enum
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.call.handoff import HANDOFF_EVENTS, HANDOFF_TRANSITIONS, Handoff, HandoffState
from service.call.interruption import INTERRUPT_EVENTS, INTERRUPT_TRANSITIONS, InterruptState
from service.call.link import LINK_EVENTS, LINK_TRANSITIONS, PREBUFFER_FRAMES, LinkState, ModelLink
from service.call.machine import InvalidTransition, Machine
from service.call.observer import EscalationRequest
from service.call.phase import PHASE_EVENTS, TRANSITIONS, CallState
from service.call.playback import PLAYBACK_EVENTS, PLAYBACK_TRANSITIONS, PlaybackLedger, PlaybackState
from service.call.turns import MAX_TOOL_STATE, REPLY_EVENTS, REPLY_TRANSITIONS, ReplyState, ReplyTracker

TABLES: list[tuple[str, type[enum.Enum], tuple[str, ...], dict[Any, Any]]] = [
    ("call", CallState, PHASE_EVENTS, TRANSITIONS),
    ("model_link", LinkState, LINK_EVENTS, LINK_TRANSITIONS),
    ("replies", ReplyState, REPLY_EVENTS, REPLY_TRANSITIONS),
    ("playback", PlaybackState, PLAYBACK_EVENTS, PLAYBACK_TRANSITIONS),
    ("handoff", HandoffState, HANDOFF_EVENTS, HANDOFF_TRANSITIONS),
    ("interruption", InterruptState, INTERRUPT_EVENTS, INTERRUPT_TRANSITIONS),
]


@pytest.mark.parametrize(("name", "states", "events", "table"), TABLES, ids=[t[0] for t in TABLES])
def test_every_state_and_event(name: str, states: type[enum.Enum], events: tuple[str, ...],
                               table: dict[Any, Any]) -> None:
    assert {event for _state, event in table} <= set(events), "the table uses an undeclared event"
    for state, event in itertools.product(states, events):
        machine = Machine(name, state, table)
        if (state, event) in table:
            assert machine.fire(event) is table[(state, event)]
        else:
            with pytest.raises(InvalidTransition) as raised:
                machine.fire(event)
            assert machine.state is state and raised.value.event == event and raised.value.state is state


@pytest.mark.parametrize(("name", "states", "events", "table"), TABLES, ids=[t[0] for t in TABLES])
def test_every_state_is_reachable_and_every_event_used(name: str, states: type[enum.Enum], events: tuple[str, ...],
                                                       table: dict[Any, Any]) -> None:
    initial = next(iter(states))
    reached, frontier = {initial}, [initial]
    while frontier:
        state = frontier.pop()
        for event in events:
            target = table.get((state, event))
            if target is not None and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(states)
    assert {event for _state, event in table} == set(events)


def test_on_change_runs_on_changes_only() -> None:
    seen: list[tuple[CallState, CallState]] = []
    machine = Machine("call", CallState.CONNECTING, TRANSITIONS, lambda new, old: seen.append((new, old)))
    machine.fire("session_ready")
    machine.fire("bot_audio")
    machine.fire("bot_audio")  # self-loop: no change
    assert seen == [(CallState.LISTENING, CallState.CONNECTING), (CallState.BOT_SPEAKING, CallState.LISTENING)]


def test_call_phase_ends_only_through_ending() -> None:
    for state in CallState:
        if state is not CallState.ENDING:
            assert (state, "closed") not in TRANSITIONS
    assert not any(source is CallState.ENDED for source, _event in TRANSITIONS)


# --- model link ------------------------------------------------------------------------------------

async def _send(_text: str) -> None:
    return None


def test_link_holds_audio_until_open_and_after_loss() -> None:
    link = ModelLink()
    assert link.audio_send is None and link.state is LinkState.IDLE
    link.attach(_send, None)
    assert link.audio_send is None and link.send is _send and not link.replaced
    link.configure()
    assert link.audio_send is None  # held frames go first
    link.open_audio()
    assert link.audio_send is _send and link.live_since < float("inf")
    assert link.ready() is True and link.ready() is False
    link.lost()
    assert link.state is LinkState.LOST and link.send is None and link.audio_send is None
    link.attach(_send, None)
    assert link.replaced and link.state is LinkState.AWAITING_SESSION
    link.close()
    link.close()  # idempotent
    assert link.state is LinkState.CLOSED and link.send is None
    with pytest.raises(InvalidTransition):
        link.attach(_send, None)


def test_link_open_audio_after_loss_does_not_reopen() -> None:
    link = ModelLink()
    link.attach(_send, None)
    link.configure()
    link.lost()
    link.open_audio()
    assert link.audio_send is None


def test_link_prebuffer_is_bounded_and_keeps_the_newest() -> None:
    link = ModelLink()
    for index in range(PREBUFFER_FRAMES * 3):
        link.prebuffer.append(bytes([index % 256]))
    assert len(link.prebuffer) == PREBUFFER_FRAMES
    assert link.prebuffer[-1] == bytes([(PREBUFFER_FRAMES * 3 - 1) % 256])


# --- replies ---------------------------------------------------------------------------------------

def test_replies_one_create_outstanding_and_last_request_waits() -> None:
    replies = ReplyTracker()
    assert replies.request(None) is True
    assert replies.request("first") is False and replies.request("second") is False
    assert replies.pending == "second"
    replies.created("r1")
    assert replies.done("r0") is False and replies.state is ReplyState.ACTIVE  # stale done
    assert replies.done("r1") is True and replies.state is ReplyState.IDLE
    assert replies.take_pending() == "second" and replies.take_pending() is None


def test_replies_refused_create_waits_and_cancelled_responses_are_dropped() -> None:
    replies = ReplyTracker()
    replies.request("x")
    replies.refused()
    assert replies.state is ReplyState.IDLE and replies.pending == ""
    replies.created("r1")  # the server's own response
    assert replies.drop_active() == "r1" and replies.is_dropped("r1") and not replies.is_dropped("r2")
    with pytest.raises(InvalidTransition):
        replies.refused()  # nothing of ours was in flight


def test_replies_tool_state_is_bounded() -> None:
    replies = ReplyTracker()
    for index in range(MAX_TOOL_STATE * 4):
        replies.tool_call_started(f"c{index}", "tool")
        assert replies.tool_call_done(f"r{index}", f"c{index}", "", "{}")
    assert len(replies._tool_names) == 0
    assert len(replies._tool_calls) == MAX_TOOL_STATE
    accepted = [replies.tool_call_done("big", f"x{n}", "t", "{}") for n in range(MAX_TOOL_STATE + 5)]
    assert accepted.count(True) == MAX_TOOL_STATE
    assert replies.pop_tool_calls(f"r{MAX_TOOL_STATE * 4 - 1}") == [(f"c{MAX_TOOL_STATE * 4 - 1}", "tool", "{}")]
    replies.reset()
    assert replies.pop_tool_calls("big") == [] and replies.state is ReplyState.IDLE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["request", "created", "done", "refused", "reset", "drop"]), max_size=40))
def test_replies_invariants_under_any_sequence(ops: list[str]) -> None:
    replies = ReplyTracker()
    counter = itertools.count()
    for op in ops:
        rid = f"r{next(counter) % 3}"
        try:
            if op == "request":
                replies.request("i")
            elif op == "created":
                replies.created(rid)
            elif op == "done":
                replies.done(rid)
            elif op == "refused":
                replies.refused()
            elif op == "reset":
                replies.reset()
            else:
                replies.drop_active()
        except InvalidTransition:
            pass
        assert (replies.active is not None) == (replies.state is ReplyState.ACTIVE)


# --- playback ledger --------------------------------------------------------------------------------

def test_ledger_state_follows_outstanding_marks() -> None:
    ledger = PlaybackLedger()
    first = ledger.on_audio_sent("i1", 800, 0.0)
    second = ledger.on_audio_sent("i1", 800, 0.0)
    assert ledger.state is PlaybackState.PLAYING
    assert ledger.on_mark_echoed(first, 0.1) and ledger.state is PlaybackState.PLAYING
    assert ledger.on_mark_echoed(second, 0.2) and ledger.state is PlaybackState.SILENT
    assert not ledger.on_mark_echoed(second, 0.3)  # a repeated echo carries nothing
    with pytest.raises(InvalidTransition):
        ledger.on_clear(0.3)  # nothing to clear


def test_ledger_bytes_per_ms_scales_heard_position() -> None:
    mulaw, l16 = PlaybackLedger(8), PlaybackLedger(32)
    mulaw.on_audio_sent("i", 8000, 0.0)  # 1 s of mu-law 8 kHz
    l16.on_audio_sent("i", 32000, 0.0)  # 1 s of L16 16 kHz
    assert mulaw.heard("i", 0.25).heard_ms == l16.heard("i", 0.25).heard_ms == 250
    assert mulaw.heard("i", 5.0).heard_ms == l16.heard("i", 5.0).heard_ms == 1000  # never more than sent


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "echo", "clear"]), st.integers(0, 5)), max_size=40))
def test_ledger_playing_iff_marks_outstanding(ops: list[tuple[str, int]]) -> None:
    ledger = PlaybackLedger()
    names: list[str] = []
    now = 0.0
    for op, arg in ops:
        now += 0.01
        if op == "send":
            names.append(ledger.on_audio_sent(f"i{arg % 2}", 160, now))
        elif op == "echo" and names:
            ledger.on_mark_echoed(names[arg % len(names)], now)
        elif op == "clear" and ledger.state is PlaybackState.PLAYING:
            ledger.on_clear(now)
        assert (ledger.state is PlaybackState.PLAYING) == (ledger.outstanding_marks > 0)


# --- hand-off ---------------------------------------------------------------------------------------

def test_handoff_line_then_transfer_once() -> None:
    handoff = Handoff()
    handoff.escalate(EscalationRequest(trigger="dtmf", reason="pressed 0"))
    handoff.speak()
    handoff.response_created("r1")
    handoff.response_created("r2")  # only the first response after speak says the line
    assert handoff.response_done("r2") is False and handoff.state is HandoffState.SPEAKING
    assert handoff.response_done("r1") is True and handoff.state is HandoffState.SPOKEN
    assert handoff.transfer() is True and handoff.transfer() is False
    with pytest.raises(InvalidTransition):
        handoff.escalate(EscalationRequest(trigger="dtmf", reason="again"))


def test_handoff_line_is_asked_again_of_a_replacement_session() -> None:
    handoff = Handoff()
    handoff.session_replaced()  # nothing to do yet
    handoff.escalate(EscalationRequest(trigger="sentiment", reason="angry"))
    handoff.speak()
    handoff.response_created("r1")
    handoff.session_replaced()
    assert handoff.state is HandoffState.PENDING and handoff.line_response is None
    with pytest.raises(InvalidTransition):
        Handoff().transfer()  # no escalation, no transfer
