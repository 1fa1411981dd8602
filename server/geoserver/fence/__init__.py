"""Geofencing (Tile38's FENCE, SETHOOK, SETCHAN): writes become events.

The commands layer hands every write's changes (old and new object, `model.Change`) to the
`engine.FenceEngine` after the write; the engine finds the fences near the change through a
spatial index of fence areas (`grid.FenceGrid`), turns each change into Tile38's event JSON
(`match.fence_match`, a port of Tile38's fenceMatch) and sends it on: live fences to their
connection, channels to pub/sub subscribers (`geoserver.pubsub`), hooks to
`server.hook_sink` on the leader only. Nothing here delivers over the network.
"""
