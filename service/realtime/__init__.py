"""Realtime (speech-to-speech) sessions: pure event dialects, the WebSocket adapter, the local engine."""
