"""Escalation defaults, defined once: the settings (``service.config``), the policy
(``service.escalation.policy.PolicyConfig``) and the call core's fallback hand-off line use these."""

from __future__ import annotations

THRESHOLD = 0.7
"""Frustration score that escalates."""
RESET_THRESHOLD = 0.45
"""Score below which the policy re-arms (hysteresis)."""
MIN_TURNS = 2
"""Caller turns before a sentiment-only escalation."""
DECAY_PER_TURN = 0.15
"""Fraction of the frustration score that decays per calm caller turn."""
HANDOFF_LINE = "I understand. Let me connect you with a member of our team who can help you further. Please hold."
"""What the bot says before a hand-off."""
TRANSFER_QUEUE = "support"
"""The provider's queue escalated calls wait in."""
