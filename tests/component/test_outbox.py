"""Notices to members: a queue each, so a stalled member delays no one, and its queue is bounded."""

from __future__ import annotations

import asyncio

from meshsync.core.wire import FolderId, Records
from meshsync.node.outbox import MAX_QUEUED_RECORDS, Outbox

DOCS = FolderId("docs")
A, B = ("10.0.0.1:22300", b"key a"), ("10.0.0.2:22300", b"key b")


def notice(n: int, records: int = 1) -> Records:
    return Records(DOCS, tuple(f"r{n}.{i}" for i in range(records)))  # type: ignore[arg-type]


class Members:
    """Takes notices; A stalls (like a SIGSTOPped node) until `a_resumes` is set."""

    def __init__(self) -> None:
        self.got: dict[str, list[Records]] = {A[0]: [], B[0]: []}
        self.a_resumes = asyncio.Event()
        self.b_has_three = asyncio.Event()

    async def send(self, address: str, key: bytes, notice: Records) -> None:
        if address == A[0]:
            await self.a_resumes.wait()
        self.got[address].append(notice)
        if len(self.got[B[0]]) == 3:
            self.b_has_three.set()


async def test_a_stalled_member_delays_neither_another_member_nor_the_caller() -> None:
    members = Members()
    outbox = Outbox(members.send)
    async with asyncio.TaskGroup() as tg:
        for n in range(3):
            outbox.post(tg, A, notice(n))  # returns at once though A takes nothing
            outbox.post(tg, B, notice(n))
        async with asyncio.timeout(5):
            await members.b_has_three.wait()
        assert members.got[A[0]] == []
        members.a_resumes.set()
    assert members.got[A[0]] == members.got[B[0]] == [notice(0), notice(1), notice(2)]


async def test_a_member_far_behind_keeps_the_newest_notices_within_the_bound() -> None:
    members = Members()
    outbox = Outbox(members.send)
    big = MAX_QUEUED_RECORDS // 4
    async with asyncio.TaskGroup() as tg:
        for n in range(10):
            outbox.post(tg, A, notice(n, big))
            assert outbox.waiting(A) <= MAX_QUEUED_RECORDS
        members.a_resumes.set()
    # Of what waited, the newest that fit; the rest A reads from our index when it catches up.
    assert [r.records[0] for r in members.got[A[0]]] == [f"r{n}.0" for n in (6, 7, 8, 9)]
    assert outbox.dropped == 6


async def test_a_member_that_fails_is_tried_with_the_next_notice_again() -> None:
    sent: list[Records] = []

    async def flaky(address: str, key: bytes, notice: Records) -> None:
        if notice == notice_1:
            raise ConnectionError("refused")
        sent.append(notice)

    notice_1 = notice(1)
    outbox = Outbox(flaky)
    async with asyncio.TaskGroup() as tg:
        outbox.post(tg, A, notice_1)
        outbox.post(tg, A, notice(2))
    assert sent == [notice(2)]
