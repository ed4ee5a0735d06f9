"""SignalWire (cXML, Twilio-compatible media streams): pure dialect and auth; see docs/providers/signalwire.md."""
