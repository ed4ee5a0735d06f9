"""Twilio Media Streams: pure dialect (``dialect``), webhook and media routes (``routes``), REST transfer (``rest``)."""
