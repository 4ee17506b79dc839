"""repscope.analysis."""
