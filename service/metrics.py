"""Prometheus metrics, defined once for the whole process (prometheus-client default registry).

With ``callbridge serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` aggregates every worker (``render_metrics``); gauges declare how they combine.

Names follow Prometheus conventions (``callbridge_`` prefix, ``_total`` counters, ``_seconds``
histograms). docs/metrics.md documents each one. Labels are low-cardinality only
(never call ids or numbers).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram

# Sub-millisecond resolution where the frame path lives; seconds where humans wait.
_FAST_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25,
)
_HUMAN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

ACTIVE_CALLS = Gauge(
    "callbridge_active_calls", "Calls currently bridged by this replica.", multiprocess_mode="livesum"
)
CALLS_STARTED = Counter("callbridge_calls_started_total", "Calls whose media stream was accepted.", ["provider"])
CALLS_RESUMED = Counter(
    "callbridge_calls_resumed_total", "Dropped media streams answered with a fresh stream (the call resumes on any replica)."
)
MODEL_UNAVAILABLE = Counter(
    "callbridge_model_unavailable_total", "Calls that found no model session, by reason.", ["reason"]
)  # cap | connect_failed | quota | reconnect_failed
MODEL_UNAVAILABLE_REASONS = ("cap", "connect_failed", "quota", "reconnect_failed")
CALLS_ENDED = Counter(
    "callbridge_calls_ended_total", "Calls ended, by outcome.", ["outcome"]
)  # completed | escalated | error
FRAMES_IN = Counter(
    "callbridge_frames_in_total", "Caller audio frames received from the provider (updated once a second per call)."
)
FRAMES_OUT = Counter("callbridge_frames_out_total", "Bot audio messages sent to the provider.")
MALFORMED_FRAMES = Counter(
    "callbridge_malformed_frames_total", "Provider messages rejected as malformed.", ["provider"]
)
FRAME_FORWARD_SECONDS = Histogram(
    "callbridge_frame_forward_seconds",
    "Time from a caller frame's arrival at the gateway to its PCM written to the Realtime socket "
    "(live frames; not those held while the session was being set up).",
    buckets=_FAST_BUCKETS,
)
FIRST_AUDIO_SECONDS = Histogram(
    "callbridge_first_audio_seconds",
    "Time from the caller's speech_stopped to the first bot audio sent to the provider.",
    buckets=_HUMAN_BUCKETS,
)
FIRST_WORDS_SECONDS = Histogram(
    "callbridge_first_words_seconds",
    "Time from the media stream's start to the first greeting audio sent to the provider, by whether "
    "the model session was pre-warmed.",
    ["prewarmed"],
    buckets=_HUMAN_BUCKETS,
)
FILLERS = Counter(
    "callbridge_fillers_total", "Filler clips played to cover a slow answer, by what the caller waited for.", ["reason"]
)  # turn | tool | other
PREWARM = Counter(
    "callbridge_prewarm_total", "Pre-warmed model sessions, by outcome.", ["outcome"]
)  # claimed | expired | failed | full | cap | missed
BARGE_INS = Counter("callbridge_barge_ins_total", "Caller interruptions of bot audio.")
INTERRUPTIONS = Counter(
    "callbridge_interruptions_total",
    "Decisions on caller speech over bot audio (pause, then decide): real, backchannel or noise.",
    ["kind"],
)
PLAYOUT_UNDERRUNS = Counter(
    "callbridge_playout_underruns_total",
    "Times the provider's queue ran dry while bot audio was held here (the caller heard a gap).",
)
BARGE_IN_REACTION_SECONDS = Histogram(
    "callbridge_barge_in_reaction_seconds",
    "Time from speech_started to the provider clear being sent.",
    buckets=_FAST_BUCKETS,
)
REALTIME_ERRORS = Counter("callbridge_realtime_errors_total", "Realtime error events and failures.", ["kind"])
#: The ``kind`` labels an ``error`` event from the model server can produce: the codes
#: docs/models/realtime.md ("Errors") names, the error type when there is no code, and ``other``
#: for anything else, so a server (or an attacker posing as one) cannot create label series.
REALTIME_ERROR_CODES = frozenset({
    "session_expired", "response_cancel_not_active", "conversation_already_has_active_response",
    "input_audio_buffer_commit_empty", "unknown_parameter", "invalid_value", "missing_required_parameter",
    "invalid_type", "rate_limit_exceeded", "insufficient_quota", "invalid_api_key", "server_error",
    "invalid_request_error", "decimal_below_min_value", "integer_above_max_value", "string_above_max_length",
})


def realtime_error_label(code: str | None, error_type: str | None = None) -> str:
    """A fixed label for ``callbridge_realtime_errors_total{kind}``: the code if known, else the
    type if known, else ``other`` (unknown strings never become labels)."""
    for candidate in (code, error_type):
        if candidate and candidate in REALTIME_ERROR_CODES:
            return candidate
    return "other"
REALTIME_CONNECT_SECONDS = Histogram(
    "callbridge_realtime_connect_seconds", "Time to open and configure a Realtime session.", buckets=_HUMAN_BUCKETS
)
REALTIME_RECONNECTS = Counter(
    "callbridge_realtime_reconnects_total", "Realtime sessions replaced mid-call after a retryable close."
)
STREAM_REJECTED = Counter(
    "callbridge_streams_rejected_total", "Media streams refused before bridging.", ["reason"]
)
WEBHOOK_REJECTED = Counter(
    "callbridge_webhooks_rejected_total", "Provider webhooks refused (bad signature, draining).", ["reason"]
)
RESPONSE_COST_USD = Counter(
    "callbridge_realtime_cost_usd_total", "Estimated Realtime spend from response.done usage.", ["model"]
)
REALTIME_TOKENS = Counter(
    "callbridge_realtime_tokens_total", "Realtime tokens from response.done usage.", ["direction", "modality"]
)

# State (Redis)
STATE_QUEUE_DEPTH = Gauge(
    "callbridge_state_queue_depth", "Pending Redis writes over all calls.", multiprocess_mode="livesum"
)
STATE_WRITE_FAILURES = Counter("callbridge_state_write_failures_total", "Redis write attempts that failed.")
STATE_WRITES_DROPPED = Counter(
    "callbridge_state_writes_dropped_total", "Redis writes dropped because a call's queue hit its bound."
)
REDIS_UP = Gauge("callbridge_redis_up", "1 when Redis answered the last health check.", multiprocess_mode="livemin")

# Sentiment & escalation
SENTIMENT_SCORE = Histogram(
    "callbridge_frustration_score", "Per-turn fused caller frustration score.",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
TRANSFER_STEPS = Counter(
    "callbridge_transfer_steps_total",
    "Transfer steps started for escalated calls (dial an agent, queue, back to the bot, give up), by kind.",
    ["step"],
)
TRANSFER_DIALS = Counter(
    "callbridge_transfer_dials_total",
    "Dialled agent legs by outcome (connected, no_answer, busy, failed, machine, canceled).",
    ["outcome"],
)
ESCALATIONS = Counter("callbridge_escalations_total", "Escalations decided, by trigger.", ["trigger"])
WEBHOOK_DELIVERIES = Counter(
    "callbridge_escalation_deliveries_total", "Escalation webhook attempts, by outcome.", ["outcome"]
)  # delivered | retry | dead_letter
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "callbridge_escalation_delivery_seconds", "Time from escalation to a 2xx from the receiver.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ESCALATIONS_LOST = Counter(
    "callbridge_escalations_lost_total",
    "Escalation records dropped because the in-memory outbox bound was hit during a long Redis outage.",
)
OUTBOX_PENDING = Gauge(
    "callbridge_escalation_outbox_pending", "Escalations not yet acknowledged by a receiver.", multiprocess_mode="livesum"
)
TOOL_CALLS = Counter(
    "callbridge_tool_calls_total",
    "Business tool calls (docs/tools.md), by tool and outcome: ok, or the failure the model was told about.",
    ["tool", "outcome"],
)  # ok | invalid_arguments | unknown_tool | busy | timeout | unreachable | http_status | too_large | invalid_json
TOOL_OUTCOMES = ("ok", "invalid_arguments", "unknown_tool", "busy", "timeout", "unreachable", "http_status",
                 "too_large", "invalid_json")
TOOL_SECONDS = Histogram(
    "callbridge_tool_seconds", "Business tool call latency, from the model's call to its output, by tool.", ["tool"],
    buckets=_HUMAN_BUCKETS,
)
DRAINING = Gauge("callbridge_draining", "1 while this replica drains after SIGTERM.", multiprocess_mode="livemax")


def _initialise_label_sets() -> None:
    """Create the known label children at start, so rate()/increase() see the first event."""
    for outcome in ("completed", "escalated", "error"):
        CALLS_ENDED.labels(outcome)
    for outcome in ("delivered", "retry", "dead_letter"):
        WEBHOOK_DELIVERIES.labels(outcome)
    for trigger in ("explicit_request", "dtmf", "model_tool", "sentiment", "drain"):
        ESCALATIONS.labels(trigger)
    for reason in ("no_start", "token", "no_secret", "token_reused", "call_streaming", "credentials", "bad_request"):
        STREAM_REJECTED.labels(reason)
    for reason in ("bad_signature", "draining", "missing_signature", "too_large", "unsupported_media_type"):
        WEBHOOK_REJECTED.labels(reason)


_initialise_label_sets()


class BatchedHistogram:
    """A per-frame histogram's observations, counted locally and added to the Prometheus histogram
    in batches: one locked update per touched bucket per batch instead of one per observation.

    Not sampled: every observation lands in the bucket ``Histogram.observe`` would put it in (the
    tests compare the exposition; the sum differs only by float summation order). Staleness is bounded: a batch is flushed after
    ``batch`` observations, and ``render_metrics`` flushes every batcher before it renders (in
    multi-process mode another worker's pending part, at most ``batch - 1`` observations, shows up
    at its next flush). Memory: one int per bucket. Event-loop thread only (not thread-safe), like
    ``render_metrics``' caller, the async ``/metrics`` endpoint.

    Uses the histogram's ``_upper_bounds``/``_buckets``/``_sum``, the attributes ``observe`` itself
    updates (prometheus-client has kept them since 0.4); the test pins this.
    """

    __slots__ = ("_batch", "_bounds", "_counts", "_histogram", "_pending", "_sum")

    def __init__(self, histogram: Histogram, batch: int = 64) -> None:
        self._histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._pending = 0
        self._batch = batch
        _BATCHERS.append(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # first bound >= value, as observe()
        self._sum += value
        self._pending += 1
        if self._pending >= self._batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        counts, buckets = self._counts, self._histogram._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self._histogram._sum.inc(self._sum)
        self._sum = 0.0
        self._pending = 0


_BATCHERS: list[BatchedHistogram] = []

#: The frame path's view of ``FRAME_FORWARD_SECONDS``.
FRAME_FORWARD = BatchedHistogram(FRAME_FORWARD_SECONDS)


def flush_batched() -> None:
    """Add every batcher's pending observations to its histogram (before rendering, at shutdown)."""
    for batcher in _BATCHERS:
        batcher.flush()


def render_metrics() -> bytes:
    """The Prometheus text exposition: this process, or every worker in multi-process mode."""
    import os

    flush_batched()
    from prometheus_client import CollectorRegistry, generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))
    return bytes(generate_latest())
