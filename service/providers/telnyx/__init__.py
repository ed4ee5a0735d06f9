"""Telnyx (TeXML media streams, RTP bidirectional mode): pure dialect and auth; see docs/providers/telnyx.md."""
