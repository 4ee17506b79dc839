"""spectrum measures (see the registry)."""
