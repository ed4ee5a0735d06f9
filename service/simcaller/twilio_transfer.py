"""What Twilio does with an escalated call's transfer TwiML, for tests and the demo (docs/providers/twilio.md#warm-transfer).

``follow_transfer(standin, handle, agents)`` takes the TwiML the gateway answered after the stream
ended and runs it like Twilio: ``<Play>`` and ``<Say>`` are recorded, ``<Dial>`` calls the dialled
``<Number>``/``<Sip>`` (each behaves as ``agents[target]`` says: ``answer``, ``machine``, ``busy``,
``no-answer``, ``failed``), runs the noun's ``url`` on the agent's leg once "answered" (signed POST
with ``AnsweredBy`` when ``machineDetection`` is set; the ``<Say>`` there is the briefing the agent
hears, a ``<Hangup>`` there ends the leg unbridged), then POSTs the ``<Dial action>`` (signed, with
``DialCallStatus``) and runs the TwiML it returns. ``<Enqueue>`` (queue name or ``workflowSid`` +
``<Task>``), ``<Connect><Stream>`` (back to the bot; open it with ``standin.follow(handle, twiml=...)``)
and ``<Hangup>`` end the walk, and so does ``<Dial><Conference>`` (the conference variant: the wait
document is fetched and its ``<Play>`` recorded; the agents arrive through REST, played by
``service.simcaller.twilio_rest.TwilioRestStandIn``). Every request is signed over the full URL,
query included, like Twilio.

Bounded: at most ``max_documents`` TwiML documents per walk (a gateway that loops is reported in
``TransferTrace.violations``, never followed forever).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from service.simcaller.twilio_caller import CallHandle, TwilioCallerStandIn, new_sid

AgentBehaviour = Literal["answer", "machine", "busy", "no-answer", "failed"]
_DIAL_STATUS = {"busy": "busy", "no-answer": "no-answer", "failed": "failed"}


@dataclass
class AgentLeg:
    """One dialled agent: who, how it behaved, what it heard (the whisper ``<Say>`` texts) and how the dial ended."""

    target: str
    behaviour: str
    answered_by: str = ""
    heard: list[str] = field(default_factory=list)
    say_language: str = ""
    say_voice: str = ""
    whisper_status: int | None = None
    bridged: bool = False
    dial_status: str = ""


@dataclass
class TransferTrace:
    """The walk: documents seen, what the caller heard/was played, the agents dialled and how it ended
    (``connected``, ``queued``, ``bot``, ``hangup``, ``conference``, ``ended``)."""

    documents: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    said_to_caller: list[str] = field(default_factory=list)
    agents: list[AgentLeg] = field(default_factory=list)
    outcome: str = ""
    queue: str = ""
    workflow_sid: str = ""
    task_attributes: str = ""
    stream_twiml: str = ""
    conference: str = ""
    hold_loops: str = ""
    violations: list[str] = field(default_factory=list)


def _number_of(dial: ET.Element) -> ET.Element | None:
    return next((child for child in dial if child.tag in ("Number", "Sip")), None)


async def _dial(standin: TwilioCallerStandIn, handle: CallHandle, dial: ET.Element,
                agents: Mapping[str, str], trace: TransferTrace) -> str | None:
    """Dial the agent; the next document (from ``action``), or None to go on with the next verb."""
    conference = dial.find("Conference")
    if conference is not None:  # the conference variant: the caller waits, hearing the wait document
        trace.conference = (conference.text or "").strip()
        trace.outcome = "conference"
        wait_url = conference.get("waitUrl", "")
        if wait_url:
            form = standin.call_form(handle.call_sid, handle.from_, handle.to, status="in-progress")
            response = await standin.post_signed(wait_url, form)
            if response.status_code != 200:
                trace.violations.append(f"conference waitUrl answered HTTP {response.status_code}")
            else:
                for verb in ET.fromstring(response.text):
                    if verb.tag == "Play":
                        trace.played.append((verb.text or "").strip())
                        trace.hold_loops = verb.get("loop", "1")
        return ""
    noun = _number_of(dial)
    if noun is None:
        trace.violations.append("<Dial> without <Number> or <Sip>")
        return None
    target = (noun.text or "").strip()
    leg = AgentLeg(target=target, behaviour=agents.get(target, "answer"))
    trace.agents.append(leg)
    child_sid = new_sid("CA")
    if leg.behaviour in ("answer", "machine"):
        hung_up = False
        if noun.get("url"):
            form = standin.call_form(child_sid, handle.to, target, status="in-progress")
            form.update({"Direction": "outbound-dial", "ParentCallSid": handle.call_sid})
            if noun.get("machineDetection"):
                leg.answered_by = "machine_start" if leg.behaviour == "machine" else "human"
                form["AnsweredBy"] = leg.answered_by
            response = await standin.post_signed(noun.get("url", ""), form)
            leg.whisper_status = response.status_code
            if response.status_code != 200:
                trace.violations.append(f"whisper answered HTTP {response.status_code}")
                hung_up = True
            else:
                root = ET.fromstring(response.text)
                for verb in root:
                    if verb.tag == "Say":
                        leg.heard.append(verb.text or "")
                        leg.say_language, leg.say_voice = verb.get("language", ""), verb.get("voice", "")
                    elif verb.tag == "Hangup":
                        hung_up = True
                    elif verb.tag == "Dial":
                        trace.violations.append("whisper TwiML may not <Dial>")
        elif leg.behaviour == "machine":
            hung_up = False  # without detection a voicemail is "connected" (the caller talks to a machine)
        leg.bridged = not hung_up
        leg.dial_status = "completed"
    else:
        leg.dial_status = _DIAL_STATUS.get(leg.behaviour, "failed")
    action = dial.get("action")
    if not action:
        if leg.bridged:
            trace.outcome = "connected"
        return None
    form = standin.call_form(handle.call_sid, handle.from_, handle.to, status="in-progress")
    form.update({"DialCallStatus": leg.dial_status, "DialCallSid": child_sid,
                 "DialCallDuration": "30" if leg.bridged else "0"})
    response = await standin.post_signed(action, form)
    if response.status_code != 200:
        trace.violations.append(f"dial action answered HTTP {response.status_code}")
        return ""
    if leg.bridged:
        trace.outcome = "connected"
    return response.text


async def follow_transfer(standin: TwilioCallerStandIn, handle: CallHandle, agents: Mapping[str, str] | None = None,
                          *, twiml: str | None = None, max_documents: int = 8) -> TransferTrace:
    """Run the call's after-stream TwiML (or ``twiml``) like Twilio; see the module docstring."""
    trace = TransferTrace()
    document: str | None = twiml if twiml is not None else handle.after_stream_twiml
    agents = agents or {}
    while document:
        if len(trace.documents) >= max_documents:
            trace.violations.append(f"more than {max_documents} TwiML documents: the gateway loops")
            break
        trace.documents.append(document)
        root = ET.fromstring(document)
        next_document: str | None = None
        for verb in root:
            if verb.tag == "Play":
                trace.played.append((verb.text or "").strip())
            elif verb.tag == "Say":
                trace.said_to_caller.append(verb.text or "")
            elif verb.tag == "Dial":
                next_document = await _dial(standin, handle, verb, agents, trace)
                if trace.outcome == "conference":
                    return trace  # the rest happens over REST (``TwilioRestStandIn``)
                if next_document is not None:
                    break
            elif verb.tag == "Enqueue":
                trace.outcome = "queued"
                trace.queue = (verb.text or "").strip()
                trace.workflow_sid = verb.get("workflowSid", "")
                task = verb.find("Task")
                trace.task_attributes = (task.text or "") if task is not None else ""
                return trace
            elif verb.tag == "Connect":
                trace.outcome, trace.stream_twiml = "bot", document
                return trace
            elif verb.tag == "Hangup":
                trace.outcome = trace.outcome if trace.outcome == "connected" else "hangup"
                return trace
            elif verb.tag == "Redirect":
                response = await standin.post_signed((verb.text or "").strip(), standin.call_form(
                    handle.call_sid, handle.from_, handle.to, status="in-progress"))
                next_document = response.text
                break
        document = next_document
    if not trace.outcome:
        trace.outcome = "ended"
    return trace
