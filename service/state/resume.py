"""Resuming a call whose media stream dropped (a replica crashed, or the socket between the provider
and a replica broke) on any replica, from the state in Redis (docs/resume.md).

The provider's after-stream webhook asks ``claim_resume``: one atomic script decides and marks the
call, so two webhooks (or two replicas) can never both resume it. A call is resumable when it is
known, was not escalated, has resumed fewer than ``max_resumes`` times, and either its stream ended
without anyone ending the call (state still live after a short grace for the owning replica's
write-behind), the gateway saw the socket close without the caller's ``stop``, or a draining replica
let the call go for another replica to resume (``CALLBRIDGE_DRAIN_MODE=resume``). The dropped stream's
claim is released in the same step: the provider has ended that stream, so the new one is admitted
at once instead of after the dead replica's heartbeat expires.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from service.state import keys as k

#: ``end_reason`` of a call whose provider socket closed without a ``stop`` (the gateway did not end it).
STREAM_DROPPED = "provider closed the stream"
#: ``end_reason`` of a call a draining replica let go so that another replica resumes it.
DRAINED = "replica draining: resumes on another replica"
#: How long a live-looking call may take to show ``ended`` after its owner closed the stream normally
#: (the state writer's coalescing window is 50 ms by default).
GRACE_S = 0.6

F_END_REASON = "end_reason"
F_RESUMES = "resumes"
F_RESUME_PENDING = "resume_pending"
F_RESUME_LINE = "resume_line"
F_TRANSFER_RETURNED_AT = "transfer_returned_at"
"""Unix time a failed transfer brought the call back to the bot (``Gateway.is_escalated`` compares it
with a replica's own memory of when the call escalated)."""
#: ``escalation_status`` of a call whose transfer failed and came back to the bot (not escalated any more).
RETURNED = "returned"

Verdict = Literal["resume", "not_resumable", "too_many", "unknown"]

_CLAIM = """
local h = redis.call('HMGET', KEYS[1], 'state', 'escalation_status', 'resumes', 'end_reason')
local state, esc, resumes, reason = h[1], h[2], tonumber(h[3] or '0'), h[4]
if not state then return 3 end
if esc and esc ~= '' and esc ~= 'none' and esc ~= 'returned' then return 0 end
if state == 'ended' and reason ~= ARGV[2] and reason ~= ARGV[3] then return 0 end
if resumes >= tonumber(ARGV[1]) then return 2 end
redis.call('HSET', KEYS[1], 'resume_pending', '1')
redis.call('HINCRBY', KEYS[1], 'resumes', 1)
redis.call('DEL', KEYS[2])
return 1
"""
_RETURN = """
local h = redis.call('HMGET', KEYS[1], 'state', 'escalation_status', 'resumes')
local state, esc, resumes = h[1], h[2], tonumber(h[3] or '0')
if not state then return 3 end
if not esc or esc == '' or esc == 'none' or esc == 'returned' then return 0 end
if resumes >= tonumber(ARGV[1]) then return 2 end
redis.call('HSET', KEYS[1], 'resume_pending', '1', 'escalation_status', 'returned', 'resume_line', ARGV[2],
  'transfer_returned_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'resumes', 1)
redis.call('DEL', KEYS[2])
return 1
"""
_VERDICTS: dict[int, Verdict] = {0: "not_resumable", 1: "resume", 2: "too_many", 3: "unknown"}


@dataclass(frozen=True)
class ResumeSeed:
    """What the replica taking a resumed stream needs: the conversation so far (role, text; oldest
    first), how many times the call has resumed, and when it started."""

    turns: tuple[tuple[str, str], ...]
    resumes: int
    started_at: str = ""
    line: str = ""
    """The first line to say, when the resumption asked for its own (a transfer that came back)."""


async def claim_resume(redis: Any, keys: k.Keys, call_id: str, max_resumes: int,
                       grace_s: float = GRACE_S) -> Verdict:
    """Decide (and mark, atomically) whether ``call_id``'s dropped stream is resumed. Raises on Redis
    errors (the caller answers as if not resumable)."""
    call_key = keys.call(call_id)
    deadline = time.monotonic() + grace_s
    while True:  # a live-looking call: give a live owner's write-behind the grace to say "ended"
        state = await redis.hget(call_key, k.F_STATE)
        if state is None or state in (b"ended", "ended") or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)  # polling another process's write to Redis (no event to wait on)
    code = await redis.eval(_CLAIM, 2, call_key, keys.streaming(call_id), max_resumes, STREAM_DROPPED, DRAINED)
    return _VERDICTS.get(int(code), "not_resumable")


async def claim_return_to_bot(redis: Any, keys: k.Keys, call_id: str, max_resumes: int, line: str) -> Verdict:
    """A transfer failed and the plan says "back to the bot": atomically turn the escalated call into a
    resumable one (``escalation_status`` = ``returned``, ``resume_pending``, the apology ``line`` for the
    new stream's first words). ``not_resumable`` when the call is not escalated (a replayed callback),
    ``too_many`` past ``max_resumes``. Raises on Redis errors (the caller falls through to the next step)."""
    code = await redis.eval(_RETURN, 2, keys.call(call_id), keys.streaming(call_id), max_resumes, line[:500],
                            f"{time.time():.3f}")
    return _VERDICTS.get(int(code), "not_resumable")


async def take_resume_seed(store: Any, call_id: str) -> ResumeSeed | None:
    """For a new stream: the seed if the call is being resumed (and clear the mark), else None."""
    snapshot = await store.load_call(call_id)
    if snapshot is None or snapshot.fields.get(F_RESUME_PENDING) != "1":
        return None
    await store.redis.hdel(store.keys.call(call_id), F_RESUME_PENDING, F_RESUME_LINE)
    names = {"bot": "assistant", "tool": "tool", "caller": "caller"}
    turns = tuple((names.get(turn.role, "caller"), turn.text) for turn in snapshot.transcript)
    return ResumeSeed(turns, int(snapshot.fields.get(F_RESUMES, "1") or 1), snapshot.fields.get(k.F_STARTED_AT, ""),
                      snapshot.fields.get(F_RESUME_LINE, ""))
