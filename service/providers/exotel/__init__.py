"""Exotel (Voicebot applet media streams): pure dialect and auth; see docs/providers/exotel.md."""
