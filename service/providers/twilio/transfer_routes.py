"""Twilio's transfer webhooks (thin: validate, decide with the pure plan, answer TwiML).

- ``first_step_twiml``: what an escalated call runs when its stream ends (after-stream) or through
  the REST update: step 0 of the plan (docs/transfer.md).
- ``POST /twilio/transfer/whisper?call&step``: Twilio runs it on the agent's leg once answered, with
  ``AnsweredBy`` when machine detection is on. A voicemail is hung up (and remembered, locally and on
  the call hash in Redis, so the dial callback on any replica sees it); a person hears the briefing.
- ``POST /twilio/transfer/dial-done?call&step``: the ``<Dial action>``: ``DialCallStatus`` (plus the
  voicemail mark) -> the plan's next step: another number, the queue, back to the bot (a new stream that
  resumes the conversation with the apology line: ``service.state.resume.claim_return_to_bot``), or
  the apology and hang-up. Connected calls end with ``<Hangup/>`` when the agent leg ends.
- ``GET /twilio/transfer/hold.wav``: the bundled hold clip (generated, 8 kHz PCM WAV).
- Conference variant (``CALLBRIDGE_TRANSFER_WARM_VIA=conference``): the caller waits in a conference
  (``POST /twilio/transfer/hold``: the looping hold audio) while each agent is called through REST;
  ``POST /twilio/transfer/agent`` (answered: voicemail hang-up, or briefing then the conference) and
  ``POST /twilio/transfer/agent-status`` (the agent call ended: the next agent is called, or the
  caller's TwiML is replaced through REST by the queue, the bot or the apology).

Every POST is signature-checked over the full public URL, query included (the routes' ``validated_form``),
so the call and step in the query are as the gateway wrote them. Every path logs one line and counts
(``callbridge_transfer_steps_total``, ``callbridge_transfer_dials_total``).
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from fastapi import FastAPI, Request, Response
from twilio.twiml.voice_response import VoiceResponse

from service import metrics
from service.escalation.briefing import build_briefing, say_language
from service.escalation.transfer_plan import (
    MACHINE_ANSWERS,
    TransferPlan,
    TransferPlanError,
    build_plan,
    dial_outcome,
)
from service.providers.ids import TWILIO_CALL_SID, is_twilio_sid
from service.providers.twilio.dialect import AFTER_STREAM_PATH, connect_stream_twiml
from service.providers.twilio.rest import create_call, update_call_twiml
from service.providers.twilio.transfer import (
    AGENT_PATH,
    AGENT_STATUS_PATH,
    DIAL_DONE_PATH,
    GIVE_UP_LINE,
    HOLD_PATH,
    HOLD_TWIML_PATH,
    WHISPER_PATH,
    agent_call_form,
    agent_join_twiml,
    caller_conference_twiml,
    hold_twiml,
    step_twiml,
    task_attributes,
    whisper_twiml,
)
from service.redaction import cap_text
from service.state.resume import claim_return_to_bot

if TYPE_CHECKING:
    from service.gateway import Gateway

from service.providers.webhooks import call_stream_token, caller_parameters

log = structlog.get_logger(__name__)
_XML = "application/xml"
F_MACHINE_STEP = "transfer_machine_step"
"""Call-hash field: the transfer step a voicemail answered (read by the dial callback)."""

CALLER_GONE = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})
"""The caller's own ``CallStatus`` values on a dial callback that mean the caller is no longer there."""

ValidatedForm = Callable[["Gateway", Request, str], Awaitable["dict[str, str] | Response"]]


def plan_for(gateway: Gateway) -> TransferPlan:
    """The configured plan (``bot`` only with Redis, where the conversation is resumed from)."""
    s = gateway.settings
    return build_plan(mode=s.transfer_mode, number=s.transfer_number, queue=s.transfer_queue,
                      fallbacks=s.transfer_fallbacks, fallback_number=s.transfer_fallback_number,
                      bot_available=gateway.state_store is not None)


def _language(gateway: Gateway, payload: dict[str, Any] | None = None) -> str:
    s = gateway.settings
    return say_language(s.transfer_briefing_language, s.transcription_language, payload)


def _give_up(language: str) -> str:
    response = VoiceResponse()
    response.say(GIVE_UP_LINE, language=language)
    response.hangup()
    return str(response)


async def step_document(gateway: Gateway, plan: TransferPlan, index: int, call_sid: str,
                        params: dict[str, str]) -> str:
    """TwiML for step ``index`` (the ``bot`` step claims the return in Redis; if it cannot, the caller
    hears the apology and the call ends). Counted in ``callbridge_transfer_steps_total``."""
    s = gateway.settings
    step = plan.step(index)
    if step.kind == "bot":
        document = await _back_to_bot(gateway, call_sid, params)
        metrics.TRANSFER_STEPS.labels("bot" if document is not None else "hangup").inc()
        return document if document is not None else _give_up(_language(gateway))
    if step.kind == "dial" and step.warm and s.transfer_warm_via == "conference":
        if await _call_agent(gateway, call_sid, index, step.target, params.get("To", "")):
            metrics.TRANSFER_STEPS.labels("dial").inc()
            return caller_conference_twiml(s.public_url, call_sid)
        following = _agent_failed(plan, index, call_sid)
        return await step_document(gateway, plan, following, call_sid, params)
    attributes = ""
    if step.kind == "queue" and s.twilio_workflow_sid:
        payload = await gateway.escalation_payload(call_sid) or {"call_id": call_sid}
        attributes = task_attributes(payload, language=_language(gateway, payload))
    metrics.TRANSFER_STEPS.labels(step.kind).inc()
    return step_twiml(plan, index, public_url=s.public_url, call_sid=call_sid, timeout_s=s.transfer_dial_timeout_s,
                      machine_detection=s.transfer_machine_detection, hold_url=s.transfer_hold_url,
                      workflow_sid=s.twilio_workflow_sid, task_attributes=attributes, language=_language(gateway))


async def first_step_twiml(gateway: Gateway, call_sid: str, params: dict[str, str] | None = None) -> str:
    """What an escalated call runs first (after-stream or REST update). ``params``: the caller's call
    form (``To`` is the gateway's own number, the caller id of agent legs placed through REST)."""
    plan = plan_for(gateway)
    step = plan.step(0)
    log.info("transfer.started", call_id=call_sid, mode=plan.mode, step=0, kind=step.kind, steps=len(plan.steps))
    return await step_document(gateway, plan, 0, call_sid, params or {})


async def _call_agent(gateway: Gateway, call_sid: str, index: int, target: str, from_: str) -> bool:
    """Conference variant: call agent ``target`` through Twilio's REST API for step ``index``."""
    s = gateway.settings
    form = agent_call_form(to=target, from_=from_, public_url=s.public_url, call_sid=call_sid, step=index,
                           timeout_s=s.transfer_dial_timeout_s, machine_detection=s.transfer_machine_detection)
    agent_sid = await create_call(api_base=s.twilio_api_base, account_sid=s.twilio_account_sid,
                                  auth_token=s.twilio_auth_token.get_secret_value(), form=form)
    log.info("transfer.agent_called", call_id=call_sid, step=index, placed=agent_sid is not None,
             agent_call_id=agent_sid or "")
    return agent_sid is not None


def _agent_failed(plan: TransferPlan, index: int, call_sid: str) -> int:
    """The agent's call could not even be placed: counted as ``failed``; the following step (a dial
    step is always followed by one)."""
    metrics.TRANSFER_DIALS.labels("failed").inc()
    following = plan.after(index, "failed")
    assert following is not None  # build_plan ends every dial with another step
    log.info("transfer.dial_done", call_id=call_sid, step=index, dial_status="not-placed", outcome="failed",
             next=plan.step(following).kind)
    return following


async def _advance_conference(gateway: Gateway, plan: TransferPlan, index: int, call_sid: str, from_: str) -> None:
    """Run step ``index`` for a caller waiting in the conference: a dial calls the next agent (the
    caller stays on hold); anything else replaces the caller's TwiML through REST. Bounded by the
    plan's length."""
    s = gateway.settings
    while plan.step(index).kind == "dial":
        if await _call_agent(gateway, call_sid, index, plan.step(index).target, from_):
            metrics.TRANSFER_STEPS.labels("dial").inc()
            return
        index = _agent_failed(plan, index, call_sid)
    document = await step_document(gateway, plan, index, call_sid, {})
    updated = await update_call_twiml(api_base=s.twilio_api_base, account_sid=s.twilio_account_sid,
                                      auth_token=s.twilio_auth_token.get_secret_value(), call_sid=call_sid,
                                      twiml=document)
    if not updated:
        log.warning("transfer.caller_update_failed", call_id=call_sid, step=index, kind=plan.step(index).kind)


async def _back_to_bot(gateway: Gateway, call_sid: str, params: dict[str, str]) -> str | None:
    store, s = gateway.state_store, gateway.settings
    if store is None:
        return None
    try:
        verdict = await asyncio.wait_for(claim_return_to_bot(store.redis, store.keys, call_sid, s.max_resumes,
                                                             s.transfer_return_line), timeout=3.0)
    except Exception as error:
        log.warning("transfer.back_to_bot_failed", call_id=call_sid, error=cap_text(repr(error), 200))
        return None
    if verdict != "resume":
        log.warning("transfer.back_to_bot_refused", call_id=call_sid, verdict=verdict)
        return None
    gateway.returned_to_bot(call_sid)
    token = call_stream_token(s, call_sid)
    log.info("transfer.back_to_bot", call_id=call_sid)
    return connect_stream_twiml(s.public_url, token, caller_parameters(params),
                                AFTER_STREAM_PATH)


def _call_and_step(request: Request, plan: TransferPlan) -> tuple[str, int] | None:
    """The caller's CallSid and the dial step index from the (signed) query; None if malformed."""
    call_sid = request.query_params.get("call", "")
    step_text = request.query_params.get("step", "")
    if not is_twilio_sid(call_sid, TWILIO_CALL_SID) or not step_text.isdigit() or len(step_text) > 2:
        return None
    step = int(step_text)
    try:
        if plan.step(step).kind != "dial":
            return None
    except TransferPlanError:
        return None
    return call_sid, step


async def _remember_machine(gateway: Gateway, call_sid: str, step: int) -> None:
    gateway.mark_agent_machine(call_sid, step)
    store = gateway.state_store
    if store is None:
        return
    try:
        await asyncio.wait_for(store.redis.hset(store.keys.call(call_sid), F_MACHINE_STEP, step), timeout=2.0)
    except Exception as error:  # the dial callback may come to this replica anyway (local mark)
        log.warning("transfer.machine_mark_failed", call_id=call_sid, error=cap_text(repr(error), 200))


async def _was_machine(gateway: Gateway, call_sid: str, step: int) -> bool:
    if gateway.agent_machines.get(call_sid) == step:
        return True
    store = gateway.state_store
    if store is None:
        return False
    try:
        value: Any = await asyncio.wait_for(store.redis.hget(store.keys.call(call_sid), F_MACHINE_STEP), timeout=2.0)
    except Exception as error:
        log.warning("transfer.machine_lookup_failed", call_id=call_sid, error=cap_text(repr(error), 200))
        return False
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value == str(step)


def _refuse(what: str, request: Request) -> Response:
    metrics.WEBHOOK_REJECTED.labels("bad_transfer_callback").inc()
    log.warning("transfer.callback_refused", callback=what, query=cap_text(request.url.query, 120))
    return Response("unknown call or step", status_code=400, media_type="text/plain")


async def handle_whisper(gateway: Gateway, request: Request, validated_form: ValidatedForm) -> Response:
    params = await validated_form(gateway, request, WHISPER_PATH)
    if isinstance(params, Response):
        return params
    plan = plan_for(gateway)
    target = _call_and_step(request, plan)
    if target is None:
        return _refuse("whisper", request)
    call_sid, step = target
    answered_by = params.get("AnsweredBy", "")[:40]
    if answered_by in MACHINE_ANSWERS:
        await _remember_machine(gateway, call_sid, step)
        log.info("transfer.agent_machine", call_id=call_sid, step=step, answered_by=answered_by)
        return Response(whisper_twiml(None, machine=True), media_type=_XML)
    payload = await gateway.escalation_payload(call_sid)
    briefing = build_briefing(payload, language=_language(gateway, payload)) if payload is not None else None
    log.info("transfer.briefing", call_id=call_sid, step=step, answered_by=answered_by or "unknown",
             chars=len(briefing.text) if briefing else 0, escalation_id=briefing.escalation_id if briefing else "")
    return Response(whisper_twiml(briefing, voice=gateway.settings.transfer_briefing_voice), media_type=_XML)


async def handle_dial_done(gateway: Gateway, request: Request, validated_form: ValidatedForm) -> Response:
    params = await validated_form(gateway, request, DIAL_DONE_PATH)
    if isinstance(params, Response):
        return params
    plan = plan_for(gateway)
    target = _call_and_step(request, plan)
    if target is None:
        return _refuse("dial-done", request)
    call_sid, step = target
    status = params.get("DialCallStatus", "")[:20]
    machine = plan.step(step).warm and await _was_machine(gateway, call_sid, step)
    outcome = dial_outcome(status, machine=machine)
    metrics.TRANSFER_DIALS.labels(outcome).inc()
    following = plan.after(step, outcome)
    if following is not None and params.get("CallStatus", "in-progress") in CALLER_GONE:
        # The caller hung up while the agent's phone rang: no fallback for nobody (and never "back to
        # the bot" for a call that no longer exists).
        log.info("transfer.dial_done", call_id=call_sid, step=step, dial_status=status, outcome=outcome,
                 next="caller_gone")
        response = VoiceResponse()
        response.hangup()
        return Response(str(response), media_type=_XML)
    if following is None:  # connected: the agent talked with the caller and the leg is over
        log.info("transfer.dial_done", call_id=call_sid, step=step, dial_status=status, outcome=outcome, next="end")
        response = VoiceResponse()
        response.hangup()
        return Response(str(response), media_type=_XML)
    log.info("transfer.dial_done", call_id=call_sid, step=step, dial_status=status, outcome=outcome,
             next=plan.step(following).kind)
    return Response(await step_document(gateway, plan, following, call_sid, params), media_type=_XML)


async def handle_agent(gateway: Gateway, request: Request, validated_form: ValidatedForm) -> Response:
    """Conference variant: the agent's leg answered (``AnsweredBy`` with machine detection)."""
    params = await validated_form(gateway, request, AGENT_PATH)
    if isinstance(params, Response):
        return params
    plan = plan_for(gateway)
    target = _call_and_step(request, plan)
    if target is None:
        return _refuse("agent", request)
    call_sid, step = target
    answered_by = params.get("AnsweredBy", "")[:40]
    if answered_by in MACHINE_ANSWERS:
        await _remember_machine(gateway, call_sid, step)
        log.info("transfer.agent_machine", call_id=call_sid, step=step, answered_by=answered_by)
        return Response(agent_join_twiml(None, call_sid=call_sid, machine=True), media_type=_XML)
    payload = await gateway.escalation_payload(call_sid)
    briefing = build_briefing(payload, language=_language(gateway, payload)) if payload is not None else None
    log.info("transfer.briefing", call_id=call_sid, step=step, answered_by=answered_by or "unknown",
             chars=len(briefing.text) if briefing else 0, escalation_id=briefing.escalation_id if briefing else "")
    return Response(agent_join_twiml(briefing, call_sid=call_sid, voice=gateway.settings.transfer_briefing_voice),
                    media_type=_XML)


_FINAL_AGENT_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


async def handle_agent_status(gateway: Gateway, request: Request, validated_form: ValidatedForm) -> Response:
    """Conference variant: the agent's call ended (``CallStatus``): connected, or the next step."""
    params = await validated_form(gateway, request, AGENT_STATUS_PATH)
    if isinstance(params, Response):
        return params
    plan = plan_for(gateway)
    target = _call_and_step(request, plan)
    if target is None:
        return _refuse("agent-status", request)
    call_sid, step = target
    status = params.get("CallStatus", "")[:20]
    if status not in _FINAL_AGENT_STATUSES:
        return Response(status_code=204)
    machine = await _was_machine(gateway, call_sid, step)
    outcome = dial_outcome(status, machine=machine)
    metrics.TRANSFER_DIALS.labels(outcome).inc()
    following = plan.after(step, outcome)
    log.info("transfer.dial_done", call_id=call_sid, step=step, dial_status=status, outcome=outcome,
             next=plan.step(following).kind if following is not None else "end")
    if following is not None:
        await _advance_conference(gateway, plan, following, call_sid, params.get("From", ""))
    return Response(status_code=204)


async def handle_hold(gateway: Gateway, request: Request, validated_form: ValidatedForm) -> Response:
    """Conference variant: the wait document (the hold audio, looping)."""
    params = await validated_form(gateway, request, HOLD_TWIML_PATH)
    if isinstance(params, Response):
        return params
    s = gateway.settings
    return Response(hold_twiml(s.transfer_hold_url or s.public_url + HOLD_PATH), media_type=_XML)


@cache
def hold_clip() -> bytes:
    """The bundled hold clip: 4.8 s of a soft two-note chime pattern (peaks -15 dBFS, -21 dBFS RMS),
    8 kHz 16-bit PCM WAV (~77 KB, built once and cached; Twilio's ``<Play>`` takes WAV)."""
    rate = 8000
    t = np.arange(int(0.4 * rate)) / rate
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.03)
    notes = [np.sin(2 * np.pi * f * t) * envelope * 0.18 for f in (523.25, 659.25)]
    rest = np.zeros(int(0.6 * rate))
    pcm = (np.concatenate([*notes, rest] * 3 + [rest]) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()


def install(app: FastAPI, gateway: Gateway, validated_form: ValidatedForm) -> None:
    @app.post(WHISPER_PATH)
    async def twilio_transfer_whisper(request: Request) -> Response:
        return await handle_whisper(gateway, request, validated_form)

    @app.post(DIAL_DONE_PATH)
    async def twilio_transfer_dial_done(request: Request) -> Response:
        return await handle_dial_done(gateway, request, validated_form)

    @app.post(AGENT_PATH)
    async def twilio_transfer_agent(request: Request) -> Response:
        return await handle_agent(gateway, request, validated_form)

    @app.post(AGENT_STATUS_PATH)
    async def twilio_transfer_agent_status(request: Request) -> Response:
        return await handle_agent_status(gateway, request, validated_form)

    @app.post(HOLD_TWIML_PATH)
    async def twilio_transfer_hold_twiml(request: Request) -> Response:
        return await handle_hold(gateway, request, validated_form)

    @app.get(HOLD_PATH)
    async def twilio_transfer_hold() -> Response:
        return Response(hold_clip(), media_type="audio/wav")
