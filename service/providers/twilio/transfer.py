"""Twilio markup for the neutral transfer plan: warm dial with a whispered briefing, fallbacks, TaskRouter.

Pure (no I/O); every document comes from the ``twilio`` package's ``VoiceResponse``. Wire facts in
docs/providers/twilio.md#warm-transfer, behaviour in docs/transfer.md:

- A ``dial`` step is ``<Dial action=DIAL_DONE timeout>`` with one ``<Number>`` (``<Sip>`` for
  ``sip:``/``sips:``). Warm: the noun carries ``url=WHISPER`` (TwiML run on the agent's leg once
  answered, before the two are bridged) and ``machineDetection="Enable"`` (the result arrives as
  ``AnsweredBy`` on that request), and the caller first hears the hold clip (``<Play>``).
- The callback URLs carry the caller's CallSid and the step index in their query. Twilio signs the
  full URL, query included, so the route can trust both after checking the signature.
- A ``queue`` step is ``<Enqueue>`` to the queue, or ``<Enqueue workflowSid><Task>`` with the
  escalation's attributes (JSON, at most ``TASK_ATTRIBUTES_MAX_BYTES``) when TaskRouter is configured.
- ``hangup`` says the apology and hangs up. The ``bot`` step (a new media stream) is built by the
  route, which mints the stream token.
- Conference variant (``CALLBRIDGE_TRANSFER_WARM_VIA=conference``): the caller waits in a conference
  named after its CallSid (``caller_conference_twiml``; hold audio looping from ``HOLD_TWIML_PATH``),
  each agent is called through REST (``agent_call_form``: ``Url=AGENT``, ``StatusCallback=AGENT_STATUS``,
  machine detection) and joins after the briefing (``agent_join_twiml``); the conference ends when
  either leaves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, VoiceResponse

from service.escalation.briefing import AgentBriefing, tool_results
from service.escalation.transfer_plan import TransferPlan, TransferStep

WHISPER_PATH = "/twilio/transfer/whisper"
AGENT_PATH = "/twilio/transfer/agent"
AGENT_STATUS_PATH = "/twilio/transfer/agent-status"
HOLD_TWIML_PATH = "/twilio/transfer/hold"
DIAL_DONE_PATH = "/twilio/transfer/dial-done"
HOLD_PATH = "/twilio/transfer/hold.wav"
TASK_ATTRIBUTES_MAX_BYTES = 4096
"""Bound on the ``<Task>`` JSON: the summary and tool results are cut to fit."""
GIVE_UP_LINE = "We're sorry, nobody could take your call right now. Please call again later. Goodbye."


def callback_url(public_url: str, path: str, call_sid: str, step: int) -> str:
    """``{public_url}{path}?call=<CallSid>&step=<index>``: the URL Twilio will request (and sign)."""
    return f"{public_url.rstrip('/')}{path}?{urlencode({'call': call_sid, 'step': step})}"


def _dial(response: VoiceResponse, step: TransferStep, *, public_url: str, call_sid: str, index: int,
          timeout_s: int, machine_detection: bool) -> None:
    dial = Dial(action=callback_url(public_url, DIAL_DONE_PATH, call_sid, index), method="POST", timeout=timeout_s)
    noun: dict[str, Any] = {}
    if step.warm:
        noun = {"url": callback_url(public_url, WHISPER_PATH, call_sid, index), "method": "POST"}
        if machine_detection:
            noun["machine_detection"] = "Enable"
    if step.target.lower().startswith(("sip:", "sips:")):
        dial.sip(step.target, **noun)
    else:
        dial.number(step.target, **noun)
    response.append(dial)


def step_twiml(
    plan: TransferPlan,
    index: int,
    *,
    public_url: str,
    call_sid: str,
    timeout_s: int = 20,
    machine_detection: bool = True,
    hold_url: str = "",
    workflow_sid: str = "",
    task_attributes: str = "",
    language: str = "en-US",
) -> str:
    """TwiML for step ``index`` of ``plan`` (``dial``, ``queue`` or ``hangup``; ``bot`` raises ValueError)."""
    step = plan.step(index)
    response = VoiceResponse()
    if step.kind == "dial":
        if step.warm and index == 0:
            response.play(hold_url or public_url.rstrip("/") + HOLD_PATH)
        _dial(response, step, public_url=public_url, call_sid=call_sid, index=index, timeout_s=timeout_s,
              machine_detection=machine_detection)
    elif step.kind == "queue":
        if workflow_sid:
            enqueue = response.enqueue(None, workflow_sid=workflow_sid)
            enqueue.task(task_attributes or "{}")
        else:
            response.enqueue(step.target)
    elif step.kind == "hangup":
        response.say(GIVE_UP_LINE, language=language)
        response.hangup()
    else:
        raise ValueError(f"step {index} ({step.kind}) is built by the route")
    return str(response)


def whisper_twiml(briefing: AgentBriefing | None, *, voice: str = "", machine: bool = False) -> str:
    """What the agent's leg runs once answered: ``<Hangup/>`` for a voicemail (the dial then ends and
    the fallback runs), else the briefing as ``<Say>`` (nothing when there is no record to brief from;
    the agent is connected straight away)."""
    response = VoiceResponse()
    if machine:
        response.hangup()
    elif briefing is not None and briefing.text:
        response.say(briefing.text, voice=voice or None, language=briefing.language)
    return str(response)


def task_attributes(payload: Mapping[str, Any], *, language: str,
                    max_bytes: int = TASK_ATTRIBUTES_MAX_BYTES) -> str:
    """The ``<Task>`` JSON for TaskRouter from an escalation record's payload: escalation id, call id,
    trigger, reason, summary, mood and score, language and tool results; at most ``max_bytes`` UTF-8
    bytes (tool results are dropped oldest first, then the summary and reason are shortened)."""
    sentiment = payload.get("sentiment")
    last = sentiment[-1] if isinstance(sentiment, list) and sentiment and isinstance(sentiment[-1], Mapping) else {}
    attrs: dict[str, Any] = {
        "type": "callbridge.escalation",
        "escalation_id": str(payload.get("escalation_id") or ""),
        "call_id": str(payload.get("call_id") or ""),
        "caller": payload.get("caller"),
        "trigger": str(payload.get("trigger") or ""),
        "reason": str(payload.get("reason") or ""),
        "summary": str(payload.get("summary") or ""),
        "sentiment": {"mood": payload.get("caller_mood"), "score": payload.get("score"),
                      "last": last.get("score") if isinstance(last, Mapping) else None},
        "language": language,
        "tool_results": tool_results(payload),
    }
    if payload.get("agent_url"):
        attrs["agent_url"] = payload["agent_url"]
    return _fit_json(attrs, max_bytes)


def _dump(attrs: Mapping[str, Any]) -> str:
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"), default=str)


def _fit_json(attrs: dict[str, Any], max_bytes: int) -> str:
    text = _dump(attrs)
    tools: Sequence[Any] = attrs["tool_results"]
    while len(text.encode()) > max_bytes and tools:
        tools = tools[1:]
        attrs["tool_results"] = list(tools)
        attrs["tool_results_dropped"] = True
        text = _dump(attrs)
    for key in ("summary", "reason", "agent_url"):
        if len(text.encode()) <= max_bytes:
            break
        value = str(attrs.get(key) or "")
        excess = len(text.encode()) - max_bytes
        attrs[key] = value.encode()[: max(0, len(value.encode()) - excess - 3)].decode(errors="ignore") + "…"
        text = _dump(attrs)
    if len(text.encode()) > max_bytes:  # pathological: ids alone too big; keep what routes the task
        text = _dump({"type": attrs["type"], "escalation_id": attrs["escalation_id"][:64],
                      "call_id": attrs["call_id"][:64], "truncated": True})
    return text


def conference_name(call_sid: str) -> str:
    """The conference a conference-variant transfer of ``call_sid`` meets in (one per call)."""
    return f"callbridge-{call_sid}"


def caller_conference_twiml(public_url: str, call_sid: str) -> str:
    """The caller waits (hold audio from ``HOLD_TWIML_PATH``, no beep) until an agent enters; the
    conference, and with it the call, ends when the caller or the agent leaves."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(conference_name(call_sid), start_conference_on_enter=False, end_conference_on_exit=True,
                    beep=False, wait_url=public_url.rstrip("/") + HOLD_TWIML_PATH, wait_method="POST")
    response.append(dial)
    return str(response)


def hold_twiml(hold_url: str) -> str:
    """The conference's wait document: the hold audio, looping until the agent enters."""
    response = VoiceResponse()
    response.play(hold_url, loop=0)
    return str(response)


def agent_call_form(*, to: str, from_: str, public_url: str, call_sid: str, step: int, timeout_s: int,
                    machine_detection: bool) -> dict[str, str]:
    """The REST form that calls agent ``to`` for step ``step`` of ``call_sid``'s transfer."""
    form = {
        "To": to, "From": from_,
        "Url": callback_url(public_url, AGENT_PATH, call_sid, step), "Method": "POST",
        "StatusCallback": callback_url(public_url, AGENT_STATUS_PATH, call_sid, step),
        "StatusCallbackMethod": "POST", "Timeout": str(timeout_s),
    }
    if machine_detection:
        form["MachineDetection"] = "Enable"
    return form


def agent_join_twiml(briefing: AgentBriefing | None, *, call_sid: str, voice: str = "", machine: bool = False) -> str:
    """The agent's leg once answered: ``<Hangup/>`` for a voicemail, else the briefing, then into the
    caller's conference (which starts now; it ends when the agent hangs up)."""
    response = VoiceResponse()
    if machine:
        response.hangup()
        return str(response)
    if briefing is not None and briefing.text:
        response.say(briefing.text, voice=voice or None, language=briefing.language)
    dial = Dial()
    dial.conference(conference_name(call_sid), start_conference_on_enter=True, end_conference_on_exit=True, beep=False)
    response.append(dial)
    return str(response)
