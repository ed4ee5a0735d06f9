"""The conversation so far, kept to re-seed a replacement model session (there is no resume).

Bounded: the last ``turns`` turns (default 20 short strings). A bot turn cut by barge-in keeps only
the share the caller heard, so a replacement session does not believe it said what nobody heard.
"""

from __future__ import annotations

from collections import deque


class ConversationHistory:
    def __init__(self, turns: int = 20) -> None:
        self._turns: deque[tuple[str, str, str]] = deque(maxlen=turns)  # (role, text, item_id)

    def add(self, role: str, text: str, item_id: str) -> None:
        self._turns.append((role, text, item_id))

    def shorten(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        """Keep the heard share (by words, proportional to audio heard) of a truncated bot turn."""
        for index, (role, text, item) in enumerate(self._turns):
            if item == item_id and role == "assistant":
                words = text.split()
                kept = " ".join(words[: round(len(words) * heard_ms / max(sent_ms, 1))])
                self._turns[index] = (role, f"{kept}... [interrupted by the caller]", item)

    def seed_note(self) -> str:
        """Text appended to a replacement session's instructions; "" when nothing was said yet."""
        if not self._turns:
            return ""
        lines = "\n".join(f"{role}: {text}" for role, text, _item in self._turns)
        return ("\n\nThe phone connection to you was re-established mid-call. The conversation so far "
                "(most recent last) was:\n" + lines + "\nContinue naturally from there; do not greet again.")
