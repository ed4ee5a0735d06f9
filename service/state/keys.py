"""The Redis key schema (docs/redis-schema.md), as pure functions of the configured prefix.

Nothing here does I/O. Every key callbridge writes is built here, so the schema document and the
code cannot drift apart silently. Keys are plain (no cluster hash tags): callbridge targets a single
Redis primary (optionally behind Sentinel), not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hash field names of the per-call hash (docs/redis-schema.md, "call hash").
F_CALL_ID = "call_id"
F_STATE = "state"
F_REPLICA = "replica"
F_STARTED_AT = "started_at"
F_UPDATED_AT = "updated_at"
F_ENDED_AT = "ended_at"
F_OUTCOME = "outcome"
F_ESCALATION_STATUS = "escalation_status"  # none | pending | delivered | dead_letter
F_ESCALATION_ID = "escalation_id"
F_ESCALATION_TRIGGER = "escalation_trigger"
F_ESCALATED_AT = "escalated_at"
F_ORPHANED_AT = "orphaned_at"
F_REAPED_BY = "reaped_by"

# Call states written by the store itself; the bridge may use any other lowercase word.
STATE_ENDED = "ended"
STATE_ORPHANED = "orphaned"
STATE_ESCALATED = "escalating"  # the call state while it is handed to a human (issue: state becomes `escalating`)

OUTBOX_GROUP = "delivery"


@dataclass(frozen=True)
class Keys:
    """All key names under one prefix (``CALLBRIDGE_REDIS_PREFIX``, default ``cb``)."""

    prefix: str = "cb"

    def call(self, call_id: str) -> str:
        """Hash: the call's fields (ids, provider, masked numbers, state, timestamps, owner, escalation)."""
        return f"{self.prefix}:call:{call_id}"

    def transcript(self, call_id: str) -> str:
        """List of JSON turns ``{"seq","role","text","ts"}``, oldest first, capped by LTRIM."""
        return f"{self.prefix}:call:{call_id}:transcript"

    def sentiment(self, call_id: str) -> str:
        """List of JSON sentiment points ``{"seq","ts","turn","score",...}``, oldest first, capped."""
        return f"{self.prefix}:call:{call_id}:sentiment"

    def events(self, call_id: str) -> str:
        """List of JSON call events ``{"seq","ts","kind",...}`` (barge-ins, tool calls, reconnects,
        escalation), oldest first, capped by LTRIM: the console's per-call event feed."""
        return f"{self.prefix}:call:{call_id}:events"

    @property
    def active_calls(self) -> str:
        """Sorted set: call ids of calls in progress, scored by start time (unix seconds)."""
        return f"{self.prefix}:calls:active"

    def replica(self, replica_id: str) -> str:
        """String with TTL: a replica's heartbeat (JSON); its absence means the replica is dead."""
        return f"{self.prefix}:replica:{replica_id}"

    @property
    def outbox(self) -> str:
        """Stream: undelivered escalation records (entries are XDEL'd once acknowledged)."""
        return f"{self.prefix}:escalations"

    @property
    def dead_letter(self) -> str:
        """Stream: escalation records a receiver refused with a non-retryable 4xx (capped by MAXLEN ~)."""
        return f"{self.prefix}:escalations:dead"

    @property
    def recent_escalations(self) -> str:
        """Sorted set: call ids of the latest escalations (any delivery status), scored by decision
        time, capped at ``outbox.RECENT_ESCALATIONS_MAX`` by the outbox script."""
        return f"{self.prefix}:escalations:recent"

    def stream_token(self, token_id: str) -> str:
        """String with TTL: a consumed stream token's nonce (single use; docs/security.md, "Stream tokens")."""
        return f"{self.prefix}:stream_token:{token_id}"

    def streaming(self, call_id: str) -> str:
        """String ``<replica>|<stream id>``: the stream that holds this call (one live stream per call)."""
        return f"{self.prefix}:streaming:{call_id}"

    @property
    def replica_prefix(self) -> str:
        """``replica(id)`` is this plus the id (for scripts that build the key from a stored replica id)."""
        return f"{self.prefix}:replica:"

    def escalation_guard(self, escalation_id: str) -> str:
        """String with TTL: makes outbox appends idempotent per escalation id."""
        return f"{self.prefix}:escalation:{escalation_id}"
