"""repscope.data."""
