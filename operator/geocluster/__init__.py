"""geocluster: the GeoCluster operator (kopf) and the local runtime that shares its policy."""

__version__ = "0.1.0"
