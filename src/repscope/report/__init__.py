"""repscope.report."""
