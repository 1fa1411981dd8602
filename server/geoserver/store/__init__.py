"""In-memory data: collections of objects with fields, expiry and a spatial index.

Nothing here does I/O or knows about protocols; commands call in, and every mutation is
reported back (a bool "changed") so the command layer decides what reaches the AOF.
"""
