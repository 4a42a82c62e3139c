"""The scanner's chunks come back in walk order, whichever thread looked at each; those the
caller looks at are read ahead first."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from meshsync.node.scanner import _in_order


@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=3), max_size=30))
def test_chunks_come_back_in_order_heavy_ones_from_the_pool_the_rest_from_the_caller(
        heaviness: list[list[bool]]) -> None:
    # A chunk is a list of (number, heavy) items; a chunk is heavy if any item is.
    numbered = iter(range(10**6))
    chunks = [[(next(numbered), heavy) for heavy in chunk] for chunk in heaviness]
    caller = threading.current_thread()
    read_ahead: list[int] = []  # the first number of each chunk read ahead
    read_first: list[bool] = []  # whether each chunk the caller looked at was read ahead

    def look(chunk: list[tuple[int, bool]]) -> list[tuple[int, bool, bool]]:
        here = threading.current_thread() is caller
        if here:
            read_first.append(chunk[0][0] in read_ahead)
        return [(n, heavy, here) for n, heavy in chunk]

    def heavy(chunk: list[tuple[int, bool]]) -> bool:
        return any(h for _, h in chunk)

    looked = list(_in_order(look, heavy, lambda chunk: read_ahead.append(chunk[0][0]),
                            iter(chunks)))  # type: ignore[arg-type]

    assert [n for n, _, _ in looked] == [n for chunk in chunks for n, _ in chunk]
    for chunk in chunks:
        in_caller = {here for n, _, here in looked if n in {m for m, _ in chunk}}
        assert in_caller == {not heavy(chunk)}
    assert read_ahead == [chunk[0][0] for chunk in chunks if not heavy(chunk)]
    assert all(read_first)


def test_a_scan_left_early_cancels_what_the_pool_has_not_begun() -> None:
    started: list[int] = []

    def look(chunk: list[int]) -> list[int]:
        started.append(chunk[0])
        return chunk

    results = _in_order(look, lambda _: True, lambda _: None,
                        iter([[n] for n in range(100)]))  # type: ignore[arg-type]
    assert next(results) == 0
    results.close()
    assert len(started) < 100
