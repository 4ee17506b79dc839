"""dimension measures (see the registry)."""
