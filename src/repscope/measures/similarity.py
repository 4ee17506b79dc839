"""similarity measures (see the registry)."""
