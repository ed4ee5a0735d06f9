"""Plivo (Audio Streams, bidirectional): pure dialect and auth; see docs/providers/plivo.md."""
