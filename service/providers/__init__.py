"""Telephony providers: one package per carrier (pure dialect, routes with their auth, transfer).

``providers.base`` holds the provider-neutral typed events and the dialect interface the call core
talks to; ``providers.tokens`` the single-use, call-bound stream tokens every provider's set-up uses.
"""
