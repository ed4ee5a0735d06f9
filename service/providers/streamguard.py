"""Single-use stream tokens and at most one live stream per call, across replicas.

A valid stream token only proves the voice webhook was answered for that CallSid recently; a replayed
(signed) webhook or a copied TwiML yields valid tokens too. ``StreamGuard.admit`` therefore does two
things in ONE atomic Redis script (docs/security.md, "Stream tokens"):

1. consume the token: ``SET <prefix>:stream_token:<id> NX PX <time left>``; a second use is refused;
2. claim the call: ``<prefix>:streaming:<CallSid>`` = ``<replica>|<StreamSid>``; refused while
   another holder exists whose replica still heartbeats (a dead replica's claim can be taken over).

``release`` deletes the claim only if this stream still holds it (compare-and-delete script).

Redis unavailable: the guard falls back to this process's own memory (bounded: ``local_max`` token ids,
~100 B each, expired ids pruned first; full = refuse) and logs ``stream.guard_degraded``: single use
and one-stream-per-call then hold per replica only. The script reads the holder's heartbeat key by
name, so it targets a single Redis primary (standalone or Sentinel), like the rest of the store.
Cancel-safe: a cancelled ``admit`` may leave the token consumed (refused later), never a stream
admitted twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import structlog

from service.redaction import cap_text
from service.state.keys import Keys

__all__ = ["Admission", "StreamGuard"]

log = structlog.get_logger(__name__)

Admission = Literal["ok", "token_reused", "call_streaming"]

_ADMIT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) == false then return 1 end
local holder = redis.call('GET', KEYS[2])
if holder then
  local replica = string.match(holder, '^(.*)|')
  if replica and redis.call('EXISTS', ARGV[3] .. replica) == 1 then return 2 end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_VERDICTS: dict[int, Admission] = {0: "ok", 1: "token_reused", 2: "call_streaming"}


class StreamGuard:
    """Admission of media streams for one replica. Methods never raise on Redis trouble."""

    def __init__(
        self,
        redis: Any,
        *,
        keys: Keys,
        replica_id: str,
        claim_ttl_s: int,
        timeout_s: float = 2.0,
        local_max: int = 100_000,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._replica_id = replica_id
        self._claim_ttl_ms = max(1000, int(claim_ttl_s) * 1000)
        self._timeout_s = timeout_s
        self._local_max = local_max
        self._used: dict[str, int] = {}  # token id -> expiry (unix s); bounded by local_max
        self._streaming: dict[str, str] = {}  # call id -> stream id, calls streaming on THIS replica

    def _owner(self, stream_id: str) -> str:
        return f"{self._replica_id}|{stream_id}"

    def _local_consume(self, token_id: str, expires_at: int) -> bool:
        if token_id in self._used:
            return False
        if len(self._used) >= self._local_max:
            now = time.time()
            for key in [key for key, expiry in self._used.items() if expiry <= now]:
                del self._used[key]
            if len(self._used) >= self._local_max:
                return False  # bounded memory wins: refuse rather than forget a used token
        self._used[token_id] = expires_at
        return True

    async def admit(self, token_id: str, expires_at: int, call_id: str, stream_id: str) -> Admission:
        """Consume the token and claim the call for this stream, or say why not. Ordered per call:
        the local check-and-reserve runs without awaiting, so two streams on one replica cannot both pass."""
        if call_id in self._streaming:
            self._local_consume(token_id, expires_at)
            return "call_streaming"
        if not self._local_consume(token_id, expires_at):
            return "token_reused"
        self._streaming[call_id] = stream_id
        if self._redis is None:
            return "ok"
        ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        try:
            code = await asyncio.wait_for(
                self._redis.eval(
                    _ADMIT, 2, self._keys.stream_token(token_id), self._keys.streaming(call_id),
                    ttl_ms, self._owner(stream_id), self._keys.replica_prefix, self._claim_ttl_ms,
                ),
                self._timeout_s,
            )
        except Exception as error:  # Redis down or slow: this replica's memory still guards
            log.warning("stream.guard_degraded", error=cap_text(repr(error), 200))
            return "ok"
        verdict = _VERDICTS.get(int(code), "call_streaming")
        if verdict != "ok":
            self._streaming.pop(call_id, None)
        return verdict

    async def release(self, call_id: str, stream_id: str) -> None:
        """Give the call's claim up (only if this stream holds it). Never raises."""
        if self._streaming.get(call_id) == stream_id:
            del self._streaming[call_id]
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(
                self._redis.eval(_RELEASE, 1, self._keys.streaming(call_id), self._owner(stream_id)),
                self._timeout_s,
            )
        except Exception as error:  # the claim expires with its TTL, or is taken over once we are gone
            log.warning("stream.guard_release_failed", error=cap_text(repr(error), 200))


def stream_guard_for(gateway: Any) -> StreamGuard:
    """The gateway's guard, created on first use (Redis from its state store when one is configured)."""
    guard = getattr(gateway, "stream_guard", None)
    if guard is None:
        settings = gateway.settings
        store = gateway.state_store
        guard = StreamGuard(
            store.redis if store is not None else None,
            keys=Keys(settings.redis_prefix),
            replica_id=settings.replica_id,
            claim_ttl_s=settings.call_ttl_s,
        )
        gateway.stream_guard = guard
    return guard
