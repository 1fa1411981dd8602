"""The append-only file: the log writer, the start-up loader, and online AOFSHRINK.

Format: a sequence of canonical RESP arrays of bulk strings, one per successful mutation,
exactly the bytes a follower receives and appends to its own file (see docs/aof.md).
"""
