"""Per-call state in Redis: key schema (``keys``), plain data types (``model``), write-behind store (``store``)."""
