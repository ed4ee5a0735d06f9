"""Bundled persona instructions (the default empathetic support agent, English and Japanese)."""
