"""Telephony provider dialects: pure (sans-I/O) wire protocol cores, one module per provider."""
