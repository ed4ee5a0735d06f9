"""Escalation outbox + delivery worker against a real redis-server and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from service.escalation.outbox import Outbox
from service.escalation.policy import Decision, EscalationPolicy
from service.escalation.record import EscalationRecord, build_record
from service.escalation.webhook import DeliveryWorker, verify_signature
from service.state.keys import OUTBOX_GROUP
from service.state.store import StateStore
from tests.conftest import RedisServer
from tests.poll import wait_until
from tests.standins.webhook_receiver import Reply, Request, WebhookReceiver

SECRET = "whsec_integration"
ANGRY = [
    "My internet has been down since Monday.",
    "This is the third time I'm calling about this!",
    "This is ridiculous, what a waste of time.",
    "I'm sick and tired of this useless service.",
]


def deliveries(outcome: str) -> float:
    return REGISTRY.get_sample_value("callbridge_escalation_deliveries_total", {"outcome": outcome}) or 0.0



@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[StateStore]:
    s = StateStore(redis_server.url, prefix="e", replica_id="r1", retry_max_s=0.2, socket_timeout_s=0.5)
    await s.start()
    yield s
    await s.close(flush_timeout=1)


@pytest.fixture
async def outbox(store: StateStore) -> AsyncIterator[Outbox]:
    o = Outbox.for_store(store, retry_max_s=0.2)
    await o.start()
    yield o
    await o.close(flush_timeout=1)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    await r.up()
    yield r
    await r.down()


@pytest.fixture
async def workers(store: StateStore, receiver: WebhookReceiver) -> AsyncIterator[Callable[..., Awaitable[DeliveryWorker]]]:
    started: list[DeliveryWorker] = []

    async def make(consumer: str = "w1", **overrides: Any) -> DeliveryWorker:
        params: dict[str, Any] = {"url": receiver.url, "secret": SECRET, "consumer": consumer, "timeout_s": 2.0,
                                  "base_backoff_s": 0.05, "max_backoff_s": 0.2, "claim_min_idle_s": 5.0,
                                  "claim_every_s": 0.1, "block_ms": 100, "concurrency": 4, **overrides}
        worker = DeliveryWorker(store.redis, store.keys, **params)
        await worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop(grace_s=0)


def angry_call(store: StateStore, call_id: str) -> tuple[Decision, EscalationRecord]:
    """Drive a call through the policy the way the bridge will, until it escalates."""
    writer = store.call(call_id)
    writer.started({"provider": "twilio", "stream_id": f"MZ{call_id}", "provider_call_id": call_id,
                    "from": "+14155550123", "to": "+18005550000"})
    policy = EscalationPolicy(call_id=call_id, on_point=writer.sentiment)
    for text in ANGRY:
        writer.transcript("caller", text)
        decision = policy.on_caller_turn(text)
        if decision is not None:
            return decision, build_record(writer, decision, transcript_turns=10, replica=store.replica_id)
        writer.transcript("bot", "I'm sorry to hear that. Let me check.")
    raise AssertionError("angry call did not escalate")


def instant_call(store: StateStore, call_id: str, how: str) -> EscalationRecord:
    writer = store.call(call_id)
    writer.started({"provider": "twilio", "from": "+819012345678"})
    policy = EscalationPolicy(call_id=call_id, on_point=writer.sentiment)
    if how == "ja":
        writer.transcript("caller", "担当者に代わってください")
        decision = policy.on_caller_turn("担当者に代わってください")
    elif how == "dtmf":
        decision = policy.on_dtmf("0")
    else:
        decision = policy.on_model_tool_call("caller wants to dispute a charge", "frustrated")
    assert decision is not None
    return build_record(writer, decision, replica=store.replica_id)


async def test_angry_call_delivered_once_signed_and_state_updated(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    before = deliveries("delivered")
    decision, record = angry_call(store, "CA100")
    assert outbox.enqueue(record) == record.escalation_id
    await workers("w1")
    assert await receiver.wait_for(lambda r: record.escalation_id in r.accepted, 10)
    got = receiver.accepted[record.escalation_id]
    assert got.signature_ok and verify_signature(SECRET, got.signature, got.body)
    assert got.body == record.body and got.idempotency_key == record.escalation_id
    body = got.payload
    assert body["trigger"] == "sentiment" and body["caller"] == "+*******0123" and body["provider"] == "twilio"
    assert body["call_id"] == "CA100" and body["stream_id"] == "MZCA100" and body["score"] == decision.score
    assert [t["role"] for t in body["transcript"]][-1] == "caller" and body["transcript"][-1]["text"] in ANGRY
    scores = [p["score"] for p in body["sentiment"]]
    assert scores == sorted(scores) and scores[-1] >= 0.7
    assert "Mood: angry" in body["summary"] and body["decided_at"].endswith("Z")

    async def acked() -> bool:
        snap = await store.load_call("CA100")
        return snap is not None and snap.escalation_status == "delivered"

    await wait_until(acked)
    snap = await store.load_call("CA100")
    assert snap is not None and snap.state == "escalating" and snap.fields["escalation_id"] == record.escalation_id
    assert snap.fields["escalation_trigger"] == "sentiment" and len(snap.transcript) >= 3  # flushed before outbox
    assert await store.redis.xlen(store.keys.outbox) == 0
    assert (await store.redis.xpending(store.keys.outbox, OUTBOX_GROUP))["pending"] == 0
    assert deliveries("delivered") - before == 1 and receiver.duplicates == 0 and len(receiver.requests) == 1


async def test_instant_triggers_delivered(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    records = {how: instant_call(store, f"CA-{how}", how) for how in ("ja", "dtmf", "model")}
    for record in records.values():
        outbox.enqueue(record)
    await workers("w1")
    assert await receiver.wait_for(lambda r: len(r.accepted) == 3, 10)
    triggers = {how: receiver.accepted[rec.escalation_id].payload["trigger"] for how, rec in records.items()}
    assert triggers == {"ja": "explicit_request", "dtmf": "dtmf", "model": "model_tool"}
    assert receiver.accepted[records["model"].escalation_id].payload["caller_mood"] == "frustrated"
    assert "担当者" in receiver.accepted[records["ja"].escalation_id].payload["transcript"][0]["text"]


async def test_receiver_down_then_up_delivers_exactly_once(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    await receiver.down()
    retries_before = deliveries("retry")
    ids = [outbox.enqueue(angry_call(store, f"CA-d{i}")[1]) for i in range(3)]
    await workers("w1")

    async def retried() -> bool:
        return deliveries("retry") - retries_before >= 9  # every record failed at least 3 times

    await wait_until(retried)
    assert await store.redis.xlen(store.keys.outbox) == 3  # nothing acknowledged while the receiver is down
    await receiver.up()
    assert await receiver.wait_for(lambda r: len(r.accepted) == 3, 10)
    assert sorted(receiver.accepted) == sorted(ids) and receiver.duplicates == 0
    assert all(req.signature_ok for req in receiver.requests) and receiver.bad_signatures == 0
    await wait_until(lambda: _xlen_is(store, 0))


async def _xlen_is(store: StateStore, n: int) -> bool:
    return int(await store.redis.xlen(store.keys.outbox)) == n


async def test_500_twice_is_retried_with_same_key_and_body(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    receiver.policy = lambda req: Reply(500, body=b"boom") if req.attempt <= 2 else Reply(200)
    _, record = angry_call(store, "CA-500")
    outbox.enqueue(record)
    await workers("w1")
    assert await receiver.wait_for(lambda r: record.escalation_id in r.accepted, 10)
    attempts = [r for r in receiver.requests if r.idempotency_key == record.escalation_id]
    assert [r.attempt for r in attempts] == [1, 2, 3]
    assert {r.body for r in attempts} == {record.body} and all(r.signature_ok for r in attempts)


async def test_429_retry_after_is_honoured(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    receiver.policy = lambda req: Reply(429, headers={"Retry-After": "1"}) if req.attempt == 1 else Reply(200)
    _, record = angry_call(store, "CA-429")
    outbox.enqueue(record)
    await workers("w1")  # its own backoff is <= 0.2 s, so a ~1 s gap can only come from Retry-After
    assert await receiver.wait_for(lambda r: record.escalation_id in r.accepted, 10)
    first, second = receiver.requests[0], receiver.requests[1]
    assert second.at - first.at >= 0.95


async def test_400_goes_to_dead_letter(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    receiver.policy = lambda req: Reply(400, body=b'{"error":"unknown queue"}')
    before = deliveries("dead_letter")
    _, record = angry_call(store, "CA-400")
    outbox.enqueue(record)
    await workers("w1")

    async def dead() -> bool:
        return int(await store.redis.xlen(store.keys.dead_letter)) == 1

    await wait_until(dead)
    [(_, fields)] = await store.redis.xrange(store.keys.dead_letter)
    assert fields[b"status"] == b"400" and b"unknown queue" in fields[b"response"]
    assert fields[b"escalation_id"].decode() == record.escalation_id and fields[b"body"] == record.body
    assert await store.redis.xlen(store.keys.outbox) == 0 and len(receiver.requests) == 1
    snap = await store.load_call("CA-400")
    assert snap is not None and snap.escalation_status == "dead_letter"
    assert deliveries("dead_letter") - before == 1


async def test_killed_worker_entry_is_claimed_by_another(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    def policy(req: Request) -> Reply:
        return Reply(200, hold=True) if req.attempt == 1 else Reply(200)  # worker A hangs mid-delivery

    receiver.policy = policy
    _, record = angry_call(store, "CA-kill")
    outbox.enqueue(record)
    worker_a = await workers("w-a", timeout_s=30.0)
    assert await receiver.wait_for(lambda r: len(r.requests) == 1, 10)
    await worker_a.stop(grace_s=0)  # killed mid-delivery: the entry stays pending under w-a
    pending = await store.redis.xpending_range(store.keys.outbox, OUTBOX_GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"w-a"]
    assert record.escalation_id not in receiver.accepted

    await workers("w-b", claim_min_idle_s=0.3)
    assert await receiver.wait_for(lambda r: record.escalation_id in r.accepted, 10)
    assert receiver.accepted[record.escalation_id].attempt == 2
    await wait_until(lambda: _xlen_is(store, 0))


async def test_outbox_keeps_records_while_redis_is_down(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]],
    redis_server: RedisServer,
) -> None:
    await workers("w1")
    _, record = angry_call(store, "CA-down")
    assert await store.flush(5)
    redis_server.stop()
    # The bridge never waits on Redis: enqueue is a plain function (it cannot await); the time bound is
    # only a sanity check, generous enough for a loaded 2-core machine.
    assert not inspect.iscoroutinefunction(outbox.enqueue)
    started = time.perf_counter()
    outbox.enqueue(record)
    assert time.perf_counter() - started < 1.0
    assert not await outbox.flush(0.5) and outbox.pending == 1
    redis_server.start()
    assert await outbox.flush(10) and outbox.pending == 0
    assert await receiver.wait_for(lambda r: record.escalation_id in r.accepted, 15)  # worker reconnected too
    assert receiver.duplicates == 0
    assert not await outbox.write(record)  # replaying the atomic step never appends twice
    assert await store.redis.xlen(store.keys.outbox) == 0


async def test_outbox_bound_drops_oldest_and_counts_it(store: StateStore, redis_server: RedisServer) -> None:
    small = Outbox.for_store(store, pending_max=2, retry_max_s=0.2)
    await small.start()
    try:
        records = [instant_call(store, f"CA-ovf{i}", "dtmf") for i in range(3)]
        redis_server.stop()
        lost_before = REGISTRY.get_sample_value("callbridge_escalations_lost_total") or 0.0
        for record in records:
            small.enqueue(record)
        assert small.pending == 2
        assert (REGISTRY.get_sample_value("callbridge_escalations_lost_total") or 0.0) - lost_before == 1
        redis_server.start()
        assert await small.flush(10)
        entries = await store.redis.xrange(store.keys.outbox)
        assert [f[b"escalation_id"].decode() for _, f in entries] == [r.escalation_id for r in records[1:]]
    finally:
        await small.close(flush_timeout=1)


async def test_dead_letter_stream_has_an_age_bound(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    """Regression (issue 12.7): dead letters (full records with transcripts) were kept until MAXLEN only;
    entries older than CALLBRIDGE_DEAD_LETTER_MAX_AGE_S now go when a new one is added."""
    receiver.policy = lambda req: Reply(400, body=b"no")
    stale_id = f"{int((time.time() - 7200) * 1000)}-0"  # two hours old
    await store.redis.xadd(store.keys.dead_letter, {"escalation_id": "old"}, id=stale_id)
    _, record = angry_call(store, "CA-age")
    outbox.enqueue(record)
    await workers("w1", dead_letter_max_age_s=3600)

    async def only_the_new_one() -> bool:
        entries = await store.redis.xrange(store.keys.dead_letter)
        return [fields[b"escalation_id"].decode() for _, fields in entries] == [record.escalation_id]

    await wait_until(only_the_new_one)


async def test_redaction_all_keeps_pii_out_of_redis_and_the_webhook(redis_server: RedisServer) -> None:
    """CALLBRIDGE_PII_REDACTION=all: transcripts are redacted before Redis and before the record."""
    store = StateStore(redis_server.url, prefix="pii", replica_id="r1", redact_transcripts=True)
    await store.start()
    try:
        writer = store.call("CA" + "1" * 32)
        writer.started({"provider": "twilio"})
        writer.transcript("caller", "my card is 4111-1111-1111-1111 and mail is ken@example.jp")
        writer.transcript("caller", "マイナンバーは１２３４ ５６７８ ９０１８です")
        assert await writer.flush(5)
        snap = await store.load_call("CA" + "1" * 32)
        assert snap is not None
        stored = " ".join(turn.text for turn in snap.transcript)
        assert "4111" not in stored and "example.jp" not in stored and "9018" not in stored
        assert stored.count("[card]") == 1 and "[email]" in stored and "[national-id]" in stored
        decision = EscalationPolicy(call_id="x").on_model_tool_call("SSN 078-05-1120 given", "frustrated")
        assert decision is not None
        body = build_record(writer, decision, replica="r1", redact=True).body.decode()
        assert "078-05-1120" not in body and "4111" not in body and "[national-id]" in body
    finally:
        await store.close(flush_timeout=1)


async def test_a_huge_receiver_response_is_read_at_most_64_kib(
    store: StateStore, outbox: Outbox, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    """Regression (issue 12.8): the worker read a receiver's whole response (400 MB -> 1.25 GB RSS).
    A raw 127.0.0.1 receiver announces 400 MiB and writes for as long as it is read; measured: the
    bytes it got out before the worker hung up."""
    written = 0
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 419430400\r\n\r\n")
            chunk = b"x" * 65536
            while written < 400 << 20:
                writer.write(chunk)
                await writer.drain()
                written += len(chunk)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            finished.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, record = angry_call(store, "CA-big")
        outbox.enqueue(record)
        await workers("w1", url=f"http://127.0.0.1:{port}/hook")

        async def dead() -> bool:
            return int(await store.redis.xlen(store.keys.dead_letter)) == 1

        await wait_until(dead)
        async with asyncio.timeout(10):
            await finished.wait()
    finally:
        server.close()
    [(_, fields)] = await store.redis.xrange(store.keys.dead_letter)
    assert fields[b"status"] == b"400" and fields[b"response"] == b"x" * 300
    print(f"receiver response: {written} of 419430400 announced bytes got out before the worker hung up")
    assert written < 16 << 20, f"receiver pushed {written} bytes"


async def test_an_entry_enqueued_just_before_stop_is_delivered_within_the_grace(
    store: StateStore, outbox: Outbox, receiver: WebhookReceiver, workers: Callable[..., Awaitable[DeliveryWorker]]
) -> None:
    """A drain escalates its last calls and then stops the worker: those records must not wait for
    another replica. Here the worker's only slot is busy with a held delivery when the second record
    lands, so its read loop never reads it; the stop's sweep starts it within the grace period."""
    first, second = instant_call(store, "CA-drain-1", "dtmf"), instant_call(store, "CA-drain-2", "dtmf")
    receiver.policy = lambda req: Reply(hold=req.idempotency_key == first.escalation_id)
    worker = await workers("w-drain", concurrency=1, max_records=1, claim_every_s=60.0)
    outbox.enqueue(first)
    await wait_until(lambda: any(r.idempotency_key == first.escalation_id for r in receiver.requests))
    outbox.enqueue(second)

    async def both_stored() -> bool:
        return int(await store.redis.xlen(store.keys.outbox)) == 2

    await wait_until(both_stored)
    stopping = asyncio.create_task(worker.stop(grace_s=5.0))
    await wait_until(lambda: second.escalation_id in receiver.accepted)
    receiver.release()
    await stopping
    assert {first.escalation_id, second.escalation_id} <= set(receiver.accepted)
    assert (await store.redis.xpending(store.keys.outbox, OUTBOX_GROUP))["pending"] == 0
