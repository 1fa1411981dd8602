"""pyle38, the async Tile38 client (redis-py underneath: HELLO 3, then OUTPUT json), against geoserver."""

from __future__ import annotations

import pytest
from helpers import GeoServer
from pyle38 import Tile38
from pyle38.errors import Tile38IdNotFoundError, Tile38KeyNotFoundError


async def test_set_get_del(server: GeoServer) -> None:
    tile38 = Tile38(url=f"redis://127.0.0.1:{server.port}")
    try:
        assert (await tile38.set("fleet", "truck1").point(33.5123, -112.2693).exec()).ok
        await tile38.set("fleet", "truck2").fields({"speed": 90}).point(33.6, -112.1).exec()
        await tile38.set("fleet", "zone").object(
            {"type": "Polygon", "coordinates": [[[-112, 33], [-111, 33], [-111, 34], [-112, 33]]]}).exec()

        got = await tile38.get("fleet", "truck1").asObject()
        assert got.ok and got.object == {"type": "Point", "coordinates": [-112.2693, 33.5123]}
        point = await tile38.get("fleet", "truck1").asPoint()
        assert (point.point.lat, point.point.lon) == (33.5123, -112.2693)
        with_fields = await tile38.get("fleet", "truck2").withfields().asObject()
        assert with_fields.fields == {"speed": 90}
        bounds = await tile38.get("fleet", "zone").asBounds()
        assert (bounds.bounds.sw.lat, bounds.bounds.ne.lon) == (33, -111)
        assert (await tile38.get("fleet", "truck1").asHash(5)).hash == "9tbnt"

        assert (await tile38.keys("*")).keys == ["fleet"]
        assert (await tile38.delete("fleet", "truck1")).ok
        with pytest.raises(Tile38IdNotFoundError):
            await tile38.get("fleet", "truck1").asObject()
        assert (await tile38.server()).stats.num_objects == 2
        assert (await tile38.ping()).ping == "pong"
        assert (await tile38.drop("fleet")).ok
        with pytest.raises(Tile38KeyNotFoundError):
            await tile38.get("fleet", "truck2").asObject()
    finally:
        await tile38.quit()
