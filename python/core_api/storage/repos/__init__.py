"""One module per resource; each owns its SQL (bound parameters only)."""
