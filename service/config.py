"""Runtime configuration: one pydantic-settings ``Settings``, environment variables prefixed ``CALLBRIDGE_``.

Validated once at start-up (``load_settings``); a bad value stops the process with one line naming
the variable. Secrets are ``SecretStr`` so they never appear in reprs, logs or tracebacks.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.audio.filler_clip import ClipError, load_wav_clip
from service.escalation import defaults

RealtimeProvider = Literal["openai", "azure", "local"]
RealtimeDialectName = Literal["ga", "beta", "live"]


class Settings(BaseSettings):
    """Every tunable of the gateway. Field docs are the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="CALLBRIDGE_", extra="ignore", frozen=False)

    # --- process / HTTP -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface `callbridge serve` binds to.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port `callbridge serve` listens on.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`json` lines, readable `console`, or `auto` (json unless stderr is a TTY)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Minimum log level.")
    replica_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="Name of this gateway replica in Redis (default: hostname-pid).",
    )
    drain_timeout: float = Field(
        300.0, gt=0, description="Seconds active calls may run after SIGTERM before they are handed off."
    )
    drain_mode: Literal["resume", "handoff"] = Field(
        "resume", description="Calls still active at the drain timeout: `resume` on another replica (the stream is "
        "ended so the provider's after-stream reconnects it; needs Redis and CALLBRIDGE_RESUME_CALLS), or `handoff` "
        "to the human queue.",
    )
    handshake_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="A connection whose HTTP request head (or WebSocket upgrade) is not complete within this time is closed.",
    )
    max_connections: int = Field(
        1000, ge=0,
        description="Open HTTP + WebSocket connections per process; more are refused with HTTP 503. 0 = no limit.",
    )

    # --- telephony (Twilio) ---------------------------------------------------------------------
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="Public base URL the provider reaches (signature checks and the stream URL; http->ws, https->wss).",
    )
    twilio_auth_token: SecretStr = Field(
        SecretStr(""), description="Twilio auth token: validates X-Twilio-Signature. Empty = reject all webhooks."
    )
    twilio_account_sid: str = Field("", description="Twilio Account SID, for REST transfers (optional).")
    stream_token_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC key for stream tokens; all replicas must share it. Empty = derived from the Twilio auth token; "
        "with neither set every media stream is refused.",
    )
    stream_token_ttl_s: int = Field(300, gt=0, le=3600, description="Lifetime of a stream token (seconds).")
    stream_start_timeout_s: float = Field(
        5.0, gt=0, description="A stream without a valid `start` within this time is closed with 1008."
    )
    max_malformed_frames: int = Field(
        50, ge=1, description="Malformed provider frames tolerated per stream before it is closed with 1008."
    )

    # --- other carriers (docs/providers/<carrier>.md) ------------------------------------------------
    signalwire_signing_key: SecretStr = Field(
        SecretStr(""),
        description="SignalWire space Signing Key: validates X-SignalWire-Signature. Empty = reject all SignalWire webhooks.",
    )
    telnyx_public_key: SecretStr = Field(
        SecretStr(""),
        description="Telnyx account public key (base64, 32-byte Ed25519): validates telnyx-signature-ed25519. "
        "Empty = reject all Telnyx webhooks.",
    )
    telnyx_codec: Literal["PCMU", "PCMA", "L16"] = Field(
        "PCMU", description="Telnyx stream codec, both directions: `PCMU` or `PCMA` at 8 kHz, `L16` at 16 kHz."
    )
    telnyx_signature_tolerance_s: int = Field(
        300, ge=1, le=3600, description="Telnyx webhooks whose telnyx-timestamp is further than this from now are refused."
    )
    plivo_auth_token: SecretStr = Field(
        SecretStr(""),
        description="Plivo account auth token: validates X-Plivo-Signature-V3. Empty = reject all Plivo webhooks.",
    )
    plivo_content_type: Literal["mulaw", "l16-8k", "l16-16k"] = Field(
        "mulaw",
        description="Plivo stream audio, both directions: `mulaw` (8 kHz), `l16-8k` or `l16-16k` "
        "(the `<Stream contentType>` we ask for).",
    )
    vonage_signature_secret: SecretStr = Field(
        SecretStr(""),
        description="Vonage account signature secret: validates the HS256 JWT on signed webhooks. "
        "Empty = reject all Vonage webhooks.",
    )
    vonage_rate: int = Field(
        16000, description="Rate of the Vonage websocket's L16 audio (`content-type` in the NCCO): 16000 or 8000."
    )
    signalwire_space_url: str = Field(
        "", description="SignalWire space base URL (`https://<space>.signalwire.com`), for REST transfers (optional).")
    signalwire_project_id: str = Field("", description="SignalWire project ID, for REST transfers (optional).")
    signalwire_api_token: SecretStr = Field(SecretStr(""), description="SignalWire API token, for REST transfers.")
    telnyx_api_key: SecretStr = Field(
        SecretStr(""), description="Telnyx API key (Bearer), for Call Control REST transfers to a number or SIP URI.")
    telnyx_api_base: str = Field("https://api.telnyx.com", description="Telnyx REST API base URL (test server).")
    plivo_auth_id: str = Field("", description="Plivo Auth ID, for REST transfers (with CALLBRIDGE_PLIVO_AUTH_TOKEN).")
    plivo_api_base: str = Field("https://api.plivo.com", description="Plivo REST API base URL (test server).")
    vonage_application_id: str = Field("", description="Vonage application ID, for REST transfers (optional).")
    vonage_private_key_file: Path | None = Field(
        None, description="PEM file of the Vonage application's private key (signs the RS256 JWT of REST transfers).")
    vonage_api_base: str = Field("https://api.nexmo.com", description="Vonage Voice REST API base URL (test server).")
    signalwire_transfer_to: str = Field(
        "", description="Where SignalWire hands escalated calls: `queue:<name>`, `sip:<uri>` or a number. "
        "Empty = CALLBRIDGE_TRANSFER_NUMBER, else CALLBRIDGE_TRANSFER_QUEUE.",
    )
    telnyx_transfer_to: str = Field(
        "", description="Where Telnyx hands escalated calls (TeXML): `queue:<name>`, `sip:<uri>` or a number. "
        "Empty = CALLBRIDGE_TRANSFER_NUMBER, else CALLBRIDGE_TRANSFER_QUEUE.",
    )
    plivo_transfer_to: str = Field(
        "", description="Where Plivo hands escalated calls: `queue:<name>` (a conference room), `sip:<uri>` or a "
        "number. Empty = CALLBRIDGE_TRANSFER_NUMBER, else CALLBRIDGE_TRANSFER_QUEUE.",
    )
    vonage_transfer_to: str = Field(
        "", description="Where Vonage hands escalated calls (NCCO from the event webhook): `queue:<name>` (a named "
        "conversation), `sip:<uri>` or a number. Empty = CALLBRIDGE_TRANSFER_NUMBER, else CALLBRIDGE_TRANSFER_QUEUE.",
    )
    exotel_stream_user: str = Field(
        "", description="User name Exotel presents with HTTP Basic on the media-socket upgrade. Empty = refuse all."
    )
    exotel_stream_password: SecretStr = Field(
        SecretStr(""), description="Password Exotel presents with HTTP Basic on the media-socket upgrade."
    )
    exotel_sample_rate: int = Field(
        8000, description="Rate to write into the Voicebot applet URL (`?sample-rate=`): 8000 or 16000. "
        "The socket itself streams at the rate its URL names (8000 when absent)."
    )

    # --- Realtime session -----------------------------------------------------------------------
    realtime_provider: RealtimeProvider | None = Field(
        None, description="`openai`, `azure` or `local`. Default: `local` when no API key is configured, else `openai`."
    )
    realtime_url: str = Field("", description="Full WebSocket URL override (proxy, test server).")
    realtime_api_key: SecretStr = Field(
        SecretStr(""), description="API key (falls back to OPENAI_API_KEY, or AZURE_OPENAI_API_KEY for azure)."
    )
    realtime_dialect: RealtimeDialectName = Field(
        "ga", description="Model event dialect: `ga` or `beta` (Realtime API), or `live` (GPT-Live, docs/models/live.md)."
    )
    realtime_model: str = Field(
        "gpt-realtime-2.1", description="Model name (OpenAI; `gpt-realtime-2.1-mini` is the low-cost choice) or "
        "deployment name (Azure). Default `gpt-live-1` when the dialect is `live`.",
    )
    realtime_reasoning_effort: Literal["", "minimal", "low", "medium", "high", "xhigh"] = Field(
        "", description="Reasoning effort for reasoning-capable Realtime models (GA dialect; empty = the model's default)."
    )
    azure_endpoint: str = Field(
        "", description="Azure resource endpoint https://<res>.openai.azure.com (falls back to AZURE_OPENAI_ENDPOINT)."
    )
    azure_ad_token: SecretStr = Field(
        SecretStr(""), description="Microsoft Entra ID bearer token for Azure GPT-Live sessions (sent as "
        "`Authorization: Bearer`; empty = the `api-key` header with the API key)."
    )
    live_audio_format: Literal["pcm16", "pcmu"] = Field(
        "pcm16", description="GPT-Live session audio, both directions: `pcm16` (24 kHz, through the resampler) or "
        "`pcmu` (G.711 mu-law 8 kHz, passed through untouched on mu-law carriers)."
    )
    live_escalation: Literal["responses", "trigger", "off"] = Field(
        "responses", description="How the GPT-Live model escalates by its own judgement: `responses` (a Responses "
        "backend with the `escalate_to_human` function), `trigger` (a Decisions predicate over the caller transcript) "
        "or `off` (only requests, DTMF and sentiment escalate)."
    )
    live_backend_model: str = Field(
        "gpt-5.5", description="Responses model behind GPT-Live delegation (`live_escalation=responses`; Azure: a deployment name)."
    )
    live_trigger_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="Predicate probability at or above which the GPT-Live trigger escalates."
    )
    live_recycle_margin_s: float = Field(
        60.0, ge=0.0, description="Replace a GPT-Live session this long before its `expires_at` (re-seeded; the caller stays on)."
    )
    azure_api_version: str = Field(
        "2025-04-01-preview", description="Azure api-version for the preview (beta-dialect) URL."
    )
    realtime_connect_timeout_s: float = Field(10.0, gt=0, description="Realtime WebSocket connect timeout.")
    model_max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024,
        description="Largest message accepted from the model server (Realtime client and `callbridge local-realtime`); a larger one closes the session with 1009.",
    )
    instructions_file: Path | None = Field(
        None, description="File with the persona/system instructions (default: the bundled support persona)."
    )
    voice: str = Field("alloy", description="Realtime voice.")
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Server VAD threshold (0-1).")
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000, description="Server VAD prefix padding (ms).")
    vad_silence_duration_ms: int = Field(500, ge=0, le=10000, description="Server VAD silence that ends a turn (ms).")
    vad_type: Literal["server_vad", "semantic_vad"] = Field(
        "server_vad", description="Turn detection: `server_vad` (energy, uses the VAD threshold/padding/silence) or `semantic_vad` (the model judges when the caller has finished; uses the eagerness).",
    )
    vad_eagerness: Literal["low", "medium", "high", "auto"] = Field(
        "auto", description="`semantic_vad` only: how soon the model answers (`low` waits longest; `auto` = `medium`).",
    )
    noise_reduction: Literal["", "near_field", "far_field"] = Field(
        "", description="Model-side input noise reduction: `near_field` (handsets), `far_field` (speakerphones), empty = off.",
    )
    playback_lead_ms: int = Field(
        200, ge=0, le=10000,
        description="Just-in-time playback: bot audio is sent to the provider at most this far ahead of what the caller has heard (ms). 0 = send as it arrives (the unheard part is still kept for resuming).",
    )
    interrupt_confirm_ms: int = Field(
        800, ge=0, le=3000,
        description="Pause, then decide: caller speech over the bot pauses playback and is judged real or false within this time (ms). 0 = every speech start interrupts at once (the model server cancels by itself).",
    )
    interrupt_min_level_dbfs: float = Field(
        -40.0, ge=-90.0, le=0.0,
        description="While the bot speaks, caller audio quieter than this (dBFS) is not counted as speech by the interruption decision (speakerphone echo, line noise).",
    )
    temperature: float = Field(0.8, ge=0.6, le=1.2, description="Sampling temperature (beta dialect only).")
    max_output_tokens: int | Literal["inf"] = Field(
        1024, description="Max output tokens per response (1-4096 or `inf`)."
    )
    input_transcription_model: str = Field(
        "gpt-4o-transcribe", description="Input transcription model (Azure: a transcription deployment name). Empty = off."
    )
    transcription_language: str = Field("", description="Caller language hint for transcription (e.g. `en`, `ja`).")
    greeting: bool = Field(True, description="The bot speaks first after the session is configured.")
    prewarm: int = Field(
        0, ge=0, le=1000,
        description="Model sessions opened and configured per replica when the voice webhook arrives, before the "
        "stream starts (docs/first-words.md); at most this many wait at once. 0 = off.",
    )
    prewarm_ttl_s: float = Field(
        5.0, gt=0, le=60, description="A pre-warmed session no stream claimed within this time is closed (seconds)."
    )
    filler_after_ms: int = Field(
        800, ge=0, le=10000,
        description="Silence after the caller's turn ended (or a tool started) before the filler plays; 0 = no filler.",
    )
    filler_repeat_ms: int = Field(
        2000, ge=0, le=30000,
        description="While the wait goes on, the filler repeats after this much silence (at most 4 plays); 0 = once.",
    )
    filler_file: Path | None = Field(
        None, description="WAV clip to use as the filler (mono 16-bit, 8/16/24 kHz, at most 3 s). "
        "Default: the bundled synthesised \"hmm\".",
    )

    # --- local engine ----------------------------------------------------------------------------
    local_script: Path | None = Field(
        None, description="Dialogue YAML for the local engine (default: the bundled contact-center script)."
    )

    local_realtime_key: SecretStr = Field(
        SecretStr(""),
        description="`callbridge local-realtime` requires this key (`Authorization: Bearer` or `api-key` header) when set. Empty = no key.",
    )

    local_asr_processes: int = Field(
        0, ge=0, le=16, description="Speech-recogniser worker processes of the local engine (0 = min(2, CPU cores))."
    )

    # --- state ------------------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL (redis://, rediss://, unix://, or redis+sentinel://host:port/service).",
    )
    redis_prefix: str = Field("cb", description="Key prefix for everything callbridge stores in Redis.")
    call_ttl_s: int = Field(86400, gt=0, description="How long an ended call's state is kept (seconds).")
    state_queue_max: int = Field(2000, ge=10, description="Bound of each call's write-behind queue (ops).")
    state_write_delay_ms: int = Field(
        50, ge=0, le=1000,
        description="Coalescing window of the Redis writer: state changes of all calls within it share one write.",
    )
    heartbeat_interval_s: float = Field(5.0, gt=0, description="Replica heartbeat period.")
    heartbeat_ttl_s: float = Field(15.0, gt=0, description="A replica is dead once its heartbeat is this old.")

    # --- operations console (docs/console.md) ------------------------------------------------------
    console_token: SecretStr = Field(
        SecretStr(""), description="Operator token of the console at /console. Empty = console off (routes not mounted)."
    )
    console_session_ttl_s: int = Field(
        8 * 3600, gt=0, le=7 * 86400, description="Lifetime of a console login cookie (seconds)."
    )
    agent_link_secret: SecretStr = Field(
        SecretStr(""), description="HMAC key of signed agent links; all replicas must share it. Empty = derived from the console token."
    )
    agent_link_ttl_s: int = Field(3600, gt=0, le=7 * 86400, description="Lifetime of a signed agent link (seconds).")

    # --- sentiment & escalation -------------------------------------------------------------------
    escalation_threshold: float = Field(defaults.THRESHOLD, gt=0, le=1, description="Frustration score that escalates.")
    escalation_reset_threshold: float = Field(
        defaults.RESET_THRESHOLD, ge=0, lt=1, description="Score below which the escalation policy re-arms (hysteresis)."
    )
    escalation_min_turns: int = Field(defaults.MIN_TURNS, ge=0, description="Caller turns before a sentiment-only escalation.")
    sentiment_decay_per_turn: float = Field(
        defaults.DECAY_PER_TURN, ge=0, le=1, description="Fraction of the frustration score that decays per calm caller turn."
    )
    handoff_line: str = Field(
        defaults.HANDOFF_LINE, description="What the bot says before a hand-off."
    )
    max_model_sessions: int = Field(
        0, ge=0, description="Concurrent model sessions allowed across all replicas (counted in Redis); 0 = no cap."
    )
    model_unavailable_action: Literal["human", "message"] = Field(
        "human", description="A caller with no model session (cap reached, connect or quota failure): `human` "
        "(escalation with trigger model_unavailable, then the transfer) or `message` (the overflow message, then hang up).",
    )
    overflow_message: str = Field(
        "We're sorry, all of our assistants are busy right now. Please call again in a few minutes.",
        description="What the caller hears when no model session is available and the action is `message`.",
    )
    resume_calls: bool = Field(
        True, description="Resume a call on any replica when its media stream dropped (replica crash, broken socket)."
    )
    max_resumes: int = Field(3, ge=1, le=20, description="Resumptions allowed per call (then the call ends).")
    resume_line: str = Field(
        "Sorry, we had a brief interruption on the line. I'm still here.",
        description="What the bot says first on a resumed call (in the caller's language).",
    )
    escalation_webhook_url: str = Field(
        "", description="Where escalation records are POSTed (an http:// or https:// URL). Empty = not delivered."
    )
    escalation_webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC-SHA256 key for the Callbridge-Signature header; required when a webhook URL is set.",
    )
    escalation_webhook_timeout_s: float = Field(5.0, gt=0, description="Per-attempt webhook timeout.")
    escalation_max_backoff_s: float = Field(60.0, gt=0, description="Cap on the webhook retry backoff.")
    escalation_claim_idle_s: float = Field(
        30.0, gt=0, description="A delivery idle this long (its replica died) is claimed by another replica (XAUTOCLAIM)."
    )
    escalation_transcript_turns: int = Field(10, ge=1, description="Transcript turns included in a record.")
    dead_letter_max_age_s: int = Field(
        604800, ge=0,
        description="Dead-letter entries older than this are trimmed (XTRIM MINID) whenever one is added (0 = no age bound).",
    )
    pii_redaction: Literal["logs", "all"] = Field(
        "logs",
        description="`logs`: card numbers, national ids (SSN, My Number), e-mails and phone numbers are redacted in logs; "
        "`all`: also in transcripts stored in Redis and sent in escalation webhooks.",
    )
    transfer_queue: str = Field(defaults.TRANSFER_QUEUE, description="Twilio <Enqueue> queue for escalated calls.")
    transfer_number: str = Field("", description="Number or sip: URI to <Dial> instead of enqueueing.")
    transfer_via_rest: bool = Field(
        False,
        description="Transfer by the carrier's REST API where its credentials are set (Twilio: CALLBRIDGE_TWILIO_ACCOUNT_SID; "
        "SignalWire: space URL, project ID, API token; Telnyx: API key, numbers and SIP only; Plivo: Auth ID; Vonage: "
        "application ID and private key) instead of ending the stream and letting the after-stream markup run.",
    )
    twilio_api_base: str = Field("https://api.twilio.com", description="Twilio REST API base URL (regional edge, test server).")
    transfer_mode: Literal["cold", "warm"] = Field(
        "cold", description="`cold`: the escalated call goes straight to the queue or number. `warm`: the agent hears a "
        "spoken briefing from the escalation record before being connected, with fallbacks (docs/transfer.md).",
    )
    transfer_warm_via: Literal["whisper", "conference"] = Field(
        "whisper", description="Warm mode on Twilio: `whisper` (`<Dial><Number url>`: pure TwiML; the caller hears the "
        "hold clip once, then ringing) or `conference` (the caller waits in a conference with looping hold audio while "
        "the gateway calls agents through the REST API; needs CALLBRIDGE_TWILIO_ACCOUNT_SID).",
    )
    transfer_fallbacks: str = Field(
        "queue", description="Comma-separated steps tried in order when a dialled agent does not answer, is busy or is "
        "a voicemail: `number` (CALLBRIDGE_TRANSFER_FALLBACK_NUMBER), `queue`, `bot` (back to the bot, which apologises "
        "and offers a callback; needs Redis). Empty = the call ends with an apology.",
    )
    transfer_fallback_number: str = Field("", description="Second number (or sip: URI) for the `number` fallback step.")
    transfer_dial_timeout_s: int = Field(20, ge=5, le=120, description="Seconds an agent's phone rings before `no-answer`.")
    transfer_machine_detection: bool = Field(
        True, description="Warm mode: answering-machine detection on the agent leg (a voicemail counts as not answered)."
    )
    transfer_hold_url: str = Field(
        "", description="Warm mode: audio (WAV/MP3 URL) the caller hears before the agent is dialled. Empty = the bundled "
        "clip served by the gateway at /twilio/transfer/hold.wav.",
    )
    transfer_briefing_voice: str = Field("", description="`<Say voice>` of the agent briefing (empty = Twilio's default).")
    transfer_briefing_language: str = Field(
        "", description="`<Say language>` of the agent briefing, e.g. `en-US`, `ja-JP` (empty = from "
        "CALLBRIDGE_TRANSCRIPTION_LANGUAGE, else `ja-JP` when the caller spoke Japanese, else `en-US`).",
    )
    transfer_return_line: str = Field(
        "I'm sorry, none of my colleagues could take your call right now. I can arrange for someone to call you back. "
        "Would that help?",
        description="What the bot says first when a failed transfer falls back to it (the `bot` step).",
    )
    twilio_workflow_sid: str = Field(
        "", description="TaskRouter workflow SID (`WW...`): the queue step becomes `<Enqueue workflowSid>` with `<Task>` "
        "attributes from the escalation record.",
    )

    # --- cost ----------------------------------------------------------------------------------------
    prices_file: Path | None = Field(
        None, description="JSON file of model prices laid over the bundled public list prices (negotiated or "
        "Azure prices, deployment names): model-name prefix -> USD per 1M tokens (text_in, text_cached_in, text_out, "
        "audio_in, audio_cached_in, audio_out) or usd_per_minute. A model with no entry is not priced (logged once).",
    )

    # --- business tools (docs/tools.md) ----------------------------------------------------------
    tools_file: Path | None = Field(
        None, description="YAML file of business tools the model may call (docs/tools.md): name, description, JSON-schema "
        "parameters, url (https; http only for loopback), timeout_s, idempotent, secret_env, filler_after_ms. Validated at "
        "start-up (one error per problem). Unset = only the escalation tool.",
    )
    tools_max_per_call: int = Field(
        4, ge=1, le=16, description="Business tool calls running at once per call; a further one gets a 'busy' error output.",
    )
    tools_max_response_bytes: int = Field(
        65536, ge=1024, le=1 << 20, description="Largest tool answer read (bytes); a larger one is a failure output.",
    )

    @field_validator("tools_file")
    @classmethod
    def _tools_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            from service.tools.registry import load_tools_file

            load_tools_file(value)  # ToolsFileError (a ValueError) lists every problem
        return value

    @field_validator("prices_file")
    @classmethod
    def _prices_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            from service.realtime.prices import load_prices

            load_prices(value)  # PriceTableError (a ValueError) names the file and the problem
        return value

    @field_validator("signalwire_transfer_to", "telnyx_transfer_to", "plivo_transfer_to", "vonage_transfer_to")
    @classmethod
    def _transfer_to(cls, value: str) -> str:
        from service.providers.transfer import check_transfer_to

        return check_transfer_to(value)

    @field_validator("filler_file")
    @classmethod
    def _filler_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_wav_clip(value)  # the same check the first call would make, at start-up
            except ClipError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("exotel_sample_rate")
    @classmethod
    def _exotel_rate(cls, value: int) -> int:
        if value not in (8000, 16000):
            raise ValueError("must be 8000 or 16000")
        return value

    @field_validator("vonage_rate")
    @classmethod
    def _vonage_rate(cls, value: int) -> int:
        if value not in (8000, 16000):
            raise ValueError("must be 16000 or 8000")
        return value

    @field_validator("telnyx_public_key")
    @classmethod
    def _telnyx_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if text:
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64 (the public key from the Telnyx portal)") from None
            if len(raw) != 32:
                raise ValueError("must decode to a 32-byte Ed25519 public key")
        return SecretStr(text)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL, e.g. https://gw.example.com")
        return value.rstrip("/")

    @field_validator("escalation_webhook_url")
    @classmethod
    def _webhook_url_is_http(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL, e.g. https://crm.example.com/escalations")
        return value

    @field_validator("transfer_fallbacks")
    @classmethod
    def _transfer_fallbacks(cls, value: str) -> str:
        steps = [step.strip() for step in value.split(",") if step.strip()]
        unknown = [step for step in steps if step not in ("number", "queue", "bot")]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}: use number, queue, bot (comma-separated, in order)")
        if len(set(steps)) != len(steps):
            raise ValueError("a step may appear once")
        return ",".join(steps)

    @field_validator("twilio_workflow_sid")
    @classmethod
    def _workflow_sid(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"WW[0-9a-fA-F]{32}", value):
            raise ValueError("must be a TaskRouter workflow SID: WW followed by 32 hex digits")
        return value

    @field_validator("max_output_tokens", mode="before")
    @classmethod
    def _max_tokens(cls, value: object) -> object:
        if value == "inf":
            return value
        number = int(str(value))
        if not 1 <= number <= 4096:
            raise ValueError("must be 1-4096 or 'inf'")
        return number

    @model_validator(mode="after")
    def _fallbacks(self) -> Settings:
        if not self.realtime_api_key.get_secret_value():
            fallback = os.environ.get("AZURE_OPENAI_API_KEY" if self.realtime_provider == "azure" else "OPENAI_API_KEY")
            if not fallback and self.realtime_provider is None:
                fallback = os.environ.get("OPENAI_API_KEY")
            if fallback:
                self.realtime_api_key = SecretStr(fallback)
        if not self.azure_endpoint:
            self.azure_endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT", "")
        if self.realtime_dialect == "live" and "realtime_model" not in self.model_fields_set:
            self.realtime_model = "gpt-live-1"
        if self.realtime_provider is None:
            self.realtime_provider = "openai" if self.realtime_api_key.get_secret_value() else "local"
        if self.realtime_provider == "azure" and not (self.azure_endpoint or self.realtime_url):
            raise ValueError("CALLBRIDGE_REALTIME_PROVIDER=azure needs CALLBRIDGE_AZURE_ENDPOINT or AZURE_OPENAI_ENDPOINT")
        if self.escalation_webhook_url and not self.escalation_webhook_secret.get_secret_value():
            raise ValueError(
                "CALLBRIDGE_ESCALATION_WEBHOOK_SECRET must be set when CALLBRIDGE_ESCALATION_WEBHOOK_URL is "
                "(records are never sent unsigned)"
            )
        if "number" in self.transfer_fallbacks.split(",") and not self.transfer_fallback_number.strip():
            raise ValueError("CALLBRIDGE_TRANSFER_FALLBACKS has `number` but CALLBRIDGE_TRANSFER_FALLBACK_NUMBER is empty")
        if self.transfer_mode == "warm" and self.transfer_warm_via == "conference" and not self.twilio_account_sid:
            raise ValueError("CALLBRIDGE_TRANSFER_WARM_VIA=conference needs CALLBRIDGE_TWILIO_ACCOUNT_SID (agents are "
                             "called through Twilio's REST API)")
        if self.escalation_reset_threshold >= self.escalation_threshold:
            raise ValueError("CALLBRIDGE_ESCALATION_RESET_THRESHOLD must be below CALLBRIDGE_ESCALATION_THRESHOLD")
        return self

    @property
    def provider(self) -> RealtimeProvider:
        """The resolved provider (never None after validation)."""
        assert self.realtime_provider is not None
        return self.realtime_provider

    def effective_stream_token_secret(self) -> bytes:
        """Key for stream tokens: the explicit secret, else one derived from the Twilio auth token.

        Empty (``b""``) when neither is configured: there is then no key at all (never a public
        constant), and the media route refuses every stream (docs/security.md, "Stream tokens")."""
        explicit = self.stream_token_secret.get_secret_value()
        if explicit:
            return explicit.encode()
        auth_token = self.twilio_auth_token.get_secret_value()
        return ("callbridge-stream-token:" + auth_token).encode() if auth_token else b""

    @property
    def streams_enabled(self) -> bool:
        """True when a stream-token key exists; without one the gateway refuses every media stream."""
        return bool(self.effective_stream_token_secret())


class ConfigError(SystemExit):
    """Raised at start-up for an invalid environment; its message is one line naming the variable."""


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "__root__"]
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if loc:
        return f"invalid configuration: CALLBRIDGE_{loc[0].upper()}: {message}"
    return f"invalid configuration: {message}"


def load_settings(**overrides: object) -> Settings:
    """Build and validate ``Settings`` from the environment; raise ``ConfigError`` with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def exit_on_bad_config() -> Settings:
    """CLI helper: print the one-line error to stderr and exit 2 on invalid configuration."""
    try:
        return load_settings()
    except ConfigError as error:
        print(f"callbridge: {error}", file=sys.stderr)
        raise SystemExit(2) from None
