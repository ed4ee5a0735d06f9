"""Business tools: the operator's tools file (``registry``) and the signed HTTP calls (``runner``).
See docs/tools.md."""
