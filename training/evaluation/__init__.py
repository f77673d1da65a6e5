"""Measurements of a generator and the report that gathers them."""
