"""repscope.capture."""
