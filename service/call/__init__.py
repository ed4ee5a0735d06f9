"""The call: the bridge state machine, playback accounting, and per-call wiring."""
