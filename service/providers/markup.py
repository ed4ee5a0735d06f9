"""Markup shared by the carriers whose voice XML is Twilio-compatible (Twilio TwiML, SignalWire cXML)."""

from __future__ import annotations

from twilio.twiml.voice_response import Dial, VoiceResponse


def after_stream_markup(escalated: bool, queue: str, dial_target: str = "") -> str:
    """What runs after the stream: when ``escalated``, ``<Dial>`` ``dial_target`` (``<Sip>`` for ``sip:``/
    ``sips:`` URIs, else ``<Number>``) if given, else ``<Enqueue>`` to ``queue``; otherwise ``<Hangup/>``."""
    response = VoiceResponse()
    if not escalated:
        response.hangup()
        return str(response)
    target = dial_target.strip()
    if target:
        dial = Dial()
        if target.lower().startswith(("sip:", "sips:")):
            dial.sip(target)
        else:
            dial.number(target)
        response.append(dial)
    elif queue.strip():
        response.enqueue(queue.strip())
    else:
        raise ValueError("escalation needs a transfer queue or a dial target")
    return str(response)
