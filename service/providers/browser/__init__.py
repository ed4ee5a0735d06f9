"""The softphone: a browser page talking to the bot over a WebSocket (docs/providers/browser.md)."""
