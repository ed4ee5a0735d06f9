"""Twilio's part of a transfer (following the transfer TwiML, and the REST API of a conference transfer
with simulated agents) lives in the package (``service.simcaller.twilio_transfer``, ``twilio_rest``)
because ``callbridge demo`` uses it too; tests import it from here."""

from service.simcaller.twilio_rest import CallUpdate, RestAgentCall, TwilioRestStandIn
from service.simcaller.twilio_transfer import AgentLeg, TransferTrace, follow_transfer

__all__ = ["AgentLeg", "CallUpdate", "RestAgentCall", "TransferTrace", "TwilioRestStandIn", "follow_transfer"]
