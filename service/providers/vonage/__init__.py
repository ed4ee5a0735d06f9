"""Vonage (Voice API WebSocket endpoint, binary L16): pure dialect and auth; see docs/providers/vonage.md."""
