"""classes measures (see the registry)."""
