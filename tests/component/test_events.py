"""The node's event ring: numbered, bounded, followed from the loop while threads publish."""

from __future__ import annotations

import asyncio
import threading

from meshsync.control.events import Events


async def test_a_follower_gets_events_published_on_other_threads_in_order() -> None:
    events = Events()
    events.bind(asyncio.get_running_loop())
    got: list[int] = []

    async def follow() -> None:
        async for found in events.follow(0, idle=10):
            got.extend(e["n"] for e in found)
            if len(got) == 300:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    threads = [threading.Thread(target=lambda k=k: [events.publish("x", n=k * 100 + i)
                                                    for i in range(100)]) for k in range(3)]
    for t in threads:
        t.start()
    await asyncio.wait_for(follower, 5)
    assert sorted(got) == list(range(300))
    for k in range(3):  # each thread's own events keep their order
        assert [n for n in got if n // 100 == k] == list(range(k * 100, k * 100 + 100))


async def test_a_follower_that_fell_behind_the_ring_is_told_how_many_it_missed() -> None:
    events = Events(kept=10)
    for i in range(25):
        events.publish("x", n=i)
    assert events.last == 25
    found = events.since(3)
    assert found[0] == {"id": 15, "type": "missed", "time": found[0]["time"], "count": 12}
    assert [e["n"] for e in found[1:]] == list(range(15, 25))
    assert [e["id"] for e in events.since(20)] == [21, 22, 23, 24, 25]
    assert events.since(25) == []
    assert [e["n"] for e in events.since(0)] == list(range(15, 25))  # from the start: no gap told


async def test_a_quiet_stream_yields_nothing_after_its_idle_time() -> None:
    events = Events()
    events.bind(asyncio.get_running_loop())
    stream = events.follow(0, idle=0.05)
    assert await asyncio.wait_for(anext(stream), 2) == []
    events.publish("x")
    [event] = await asyncio.wait_for(anext(stream), 2)
    assert (event["id"], event["type"]) == (1, "x")
