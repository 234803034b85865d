"""HTTP resources: parse, call a service, set media. Errors are raised, never caught."""
