"""The small interface through which side work (state, transcripts, sentiment, escalation, cost)
hangs off the call bridge.

Every method is called on the event loop and must return at once: implementations enqueue work for
background tasks (bounded queues) and never await I/O inline. ``caller_audio`` is on the per-frame
path and must be O(frame) with no allocation beyond a buffer copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EscalationRequest:
    """Why a call should go to a human: trigger is explicit_request | dtmf | model_tool | sentiment | drain | model_unavailable."""

    trigger: str
    reason: str
    score: float | None = None
    inputs: dict[str, Any] | None = None


class CallObserver(Protocol):
    def state_changed(self, state: str, previous: str) -> None: ...

    def caller_audio(self, mulaw: bytes) -> None: ...

    def caller_speech_started(self, audio_start_ms: int) -> None: ...

    def caller_speech_stopped(self, audio_end_ms: int) -> None: ...

    def caller_transcript(self, item_id: str, text: str) -> None: ...

    def bot_transcript(self, item_id: str, text: str) -> None: ...

    def bot_truncated(self, item_id: str, heard_ms: int, sent_ms: int) -> None: ...

    def dtmf(self, digit: str) -> None: ...

    def tool_call(self, name: str, arguments: str) -> str:
        """Run (or schedule) a model tool call; return the function_call_output text."""
        ...

    def tool_result(self, entry: dict[str, Any]) -> None:
        """A business tool call finished (``service.tools.percall.tool_entry``: redacted, bounded)."""
        ...

    def escalation_started(self, request: EscalationRequest) -> None: ...

    def model_reconnected(self, attempt: int) -> None:
        """A dropped model session was replaced (the ``attempt``-th reconnect of this call)."""
        ...

    def usage(self, usage: dict[str, Any]) -> None: ...

    def ended(self, summary: dict[str, Any]) -> None: ...


class NullObserver:
    """Observer that does nothing (tests, and calls before side work is wired)."""

    def state_changed(self, state: str, previous: str) -> None:
        return None

    def caller_audio(self, mulaw: bytes) -> None:
        return None

    def caller_speech_started(self, audio_start_ms: int) -> None:
        return None

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        return None

    def caller_transcript(self, item_id: str, text: str) -> None:
        return None

    def bot_transcript(self, item_id: str, text: str) -> None:
        return None

    def bot_truncated(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        return None

    def dtmf(self, digit: str) -> None:
        return None

    def tool_call(self, name: str, arguments: str) -> str:
        return '{"error": "unknown tool"}'

    def tool_result(self, entry: dict[str, Any]) -> None:
        return None

    def escalation_started(self, request: EscalationRequest) -> None:
        return None

    def model_reconnected(self, attempt: int) -> None:
        return None

    def usage(self, usage: dict[str, Any]) -> None:
        return None

    def ended(self, summary: dict[str, Any]) -> None:
        return None
