"""Search spaces, one per file (installed as ``layernas.search_spaces``)."""
