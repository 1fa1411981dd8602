"""geoserver: a Tile38-compatible geospatial server (RESP + HTTP, JSON replies, AOF, replication)."""

__version__ = "0.1.0"
# The Tile38 release whose wire behaviour we follow; reported by SERVER as `version`.
TILE38_COMPAT_VERSION = "1.30.0"
