"""A simulated Twilio caller (protocol-exact) for the demo, `callbridge call`, tests and load runs."""
