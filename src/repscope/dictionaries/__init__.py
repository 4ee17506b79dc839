"""repscope.dictionaries."""
