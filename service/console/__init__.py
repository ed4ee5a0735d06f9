"""Operations console: a token-protected web view of calls, escalations and the fleet (docs/console.md).

Off unless ``CALLBRIDGE_CONSOLE_TOKEN`` is set. ``auth`` is pure (signing, verification, origin
checks); ``routes`` is the thin FastAPI adapter that reads Redis.
"""
