"""Business logic: what responders call. No HTTP here, no SQL either (that is storage's)."""
