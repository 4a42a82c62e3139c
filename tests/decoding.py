"""What the property tests of every decoder share: damaged input, and what a decoder made of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


def decoded(decode: Callable[[Any], T], data: Any, error: type[Exception]) -> T | None:
    """What `decode` makes of `data`, or None if it refused with `error` and said why.

    Any other exception is not caught: it fails the test, with the example that raised it.
    """
    try:
        return decode(data)
    except error as e:
        reason = str(e)
    assert reason, f"{decode.__qualname__} refused without saying why"
    return None


@st.composite
def damaged(draw: st.DrawFn, bodies: st.SearchStrategy[bytes],
            fragments: Sequence[bytes] = ()) -> bytearray:
    """Bytes drawn from `bodies` cut, flipped, overwritten, extended or spliced a few times;
    inserts are random bytes or one of `fragments` (what the decoder at hand finds hard)."""
    body = bytearray(draw(bodies))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        how = draw(st.sampled_from(("cut", "flip", "set", "insert", "drop", "repeat")))
        if how == "cut":
            del body[at:]
        elif how == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif how == "insert":
            extra = st.binary(min_size=1, max_size=8)
            body[at:at] = draw(extra | st.sampled_from(fragments) if fragments else extra)
        elif how == "drop":
            del body[at : at + draw(st.integers(1, 16))]
        elif how == "repeat":
            body[at:at] = body[at : at + draw(st.integers(1, 64))]
    return body
