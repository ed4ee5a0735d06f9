"""Start and stop the process-wide services behind the gateway: the Redis state store (write-behind
queue, replica heartbeat, reaping of dead replicas' calls), the escalation outbox, and the webhook
delivery worker. A Redis outage at start-up never stops the gateway: calls go on, writes queue and
are retried, and ``/readyz`` reports the outage."""

from __future__ import annotations

import contextlib

import structlog

from service.aio import cancel_and_wait
from service.escalation.outbox import Outbox
from service.escalation.webhook import DeliveryWorker
from service.gateway import Gateway
from service.state.store import StateStore

log = structlog.get_logger(__name__)


async def start_gateway_services(gateway: Gateway) -> None:
    settings = gateway.settings
    store = StateStore.from_settings(settings)
    await store.start()
    gateway.state_store = store
    gateway.outbox = Outbox.for_store(store)
    await gateway.outbox.start()
    gateway._background.append(store.start_heartbeat(reap_every_s=settings.heartbeat_ttl_s))
    if settings.escalation_webhook_url:
        worker = DeliveryWorker.from_settings(
            settings, store, claim_min_idle_s=settings.escalation_claim_idle_s,
            claim_every_s=min(5.0, settings.escalation_claim_idle_s / 2),
        )
        await worker.start()
        gateway.delivery_worker = worker
    else:
        log.warning("escalation.webhook_not_configured",
                    hint="set CALLBRIDGE_ESCALATION_WEBHOOK_URL; escalations stay in the outbox stream")


async def stop_gateway_services(gateway: Gateway) -> None:
    """Flush in order: call state, then the outbox, then let in-flight deliveries finish."""
    for task in gateway._background:
        # redis-py's wait_for can swallow a single cancel on 3.11: cancel until the task is done.
        with contextlib.suppress(Exception):
            await cancel_and_wait(task)
    if gateway.model_leases is not None:
        await gateway.model_leases.close()
    if gateway.outbox is not None:
        await gateway.outbox.close(flush_timeout=10.0)
    if gateway.delivery_worker is not None:
        await gateway.delivery_worker.stop(grace_s=10.0)
    if gateway.state_store is not None:
        await gateway.state_store.close(flush_timeout=10.0)
