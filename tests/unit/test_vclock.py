"""Version vectors: how two versions relate, how new ones are made, and what a peer may send."""

import json
import random

import pytest

from meshsync.core.errors import WireError
from meshsync.core.vclock import MAX_COUNTER, MAX_ENTRIES, MAX_OWN_COUNTER, Order, Vector

A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "0123456789abcdef"


def v(**counters: int) -> Vector:
    keys = {"a": A, "b": B, "c": C}
    return Vector.of({keys[name]: n for name, n in counters.items()})


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        (v(), v(), Order.EQUAL),
        (v(a=1), v(a=1), Order.EQUAL),
        (v(a=3, b=2), v(a=3, b=2), Order.EQUAL),
        (v(a=2), v(a=1), Order.NEWER),
        (v(a=1), v(), Order.NEWER),
        (v(a=1, b=1), v(a=1), Order.NEWER),
        (v(a=2, b=5), v(a=1, b=5), Order.NEWER),
        (v(a=1), v(a=2), Order.OLDER),
        (v(), v(a=1), Order.OLDER),
        (v(a=1), v(a=1, b=1), Order.OLDER),
        (v(a=1), v(b=1), Order.CONCURRENT),
        (v(a=2, b=1), v(a=1, b=2), Order.CONCURRENT),
        (v(a=1, c=1), v(a=1, b=1), Order.CONCURRENT),
    ],
)
def test_compare_truth_table(left: Vector, right: Vector, order: Order) -> None:
    assert left.compare(right) is order


def test_an_absent_key_counts_as_zero() -> None:
    assert v(a=4).get(B) == 0
    assert v(a=4).get(A) == 4
    assert Vector().compare(Vector.of({A: 0})) is Order.EQUAL


def test_a_zero_counter_is_dropped_so_equal_vectors_are_equal() -> None:
    with_zero = Vector.of({A: 1, B: 0})
    assert with_zero == v(a=1)
    assert hash(with_zero) == hash(v(a=1))
    assert with_zero.compare(v(a=1)) is Order.EQUAL
    assert with_zero.counters == ((A, 1),)


def test_key_order_of_the_mapping_does_not_matter() -> None:
    assert Vector.of({B: 2, A: 1}) == Vector.of({A: 1, B: 2})
    assert Vector.of({B: 2, A: 1}).counters == ((A, 1), (B, 2))


@pytest.mark.parametrize("start", [v(), v(a=1), v(b=9), v(a=3, b=7, c=1)])
@pytest.mark.parametrize("key", [A, B])
def test_bump_makes_a_version_newer_than_the_one_it_came_from(start: Vector, key: str) -> None:
    assert start.bump(key).compare(start) is Order.NEWER
    assert start.compare(start.bump(key)) is Order.OLDER


def test_bump_raises_only_the_nodes_own_counter() -> None:
    assert v(a=1, b=7).bump(A) == v(a=2, b=7)
    assert v().bump(C) == v(c=1)


def test_a_huge_counter_of_another_node_does_not_move_ours() -> None:
    # A faulty peer's counter at the top of the wire's range leaves our next version valid.
    hostile = v(a=3, b=MAX_COUNTER)
    bumped = hostile.bump(A, floor=1_700_000_000)
    assert bumped == v(a=1_700_000_000, b=MAX_COUNTER)
    assert Vector.from_json(bumped.to_json()) == bumped


def test_a_bump_after_merging_is_newer_than_every_version_merged_in() -> None:
    seen = [v(a=3), v(b=5), v(a=1, c=2)]
    merged = Vector()
    for other in seen:
        merged = merged.merge(other)
    bumped = merged.bump(B)
    for other in seen:
        assert bumped.compare(other) is Order.NEWER


def test_merge_takes_the_highest_counter_of_each_key() -> None:
    assert v(a=2, b=1).merge(v(a=1, b=3, c=1)) == v(a=2, b=3, c=1)


def test_merge_descends_from_both_inputs() -> None:
    left, right = v(a=2, b=1), v(a=1, b=3)
    merged = left.merge(right)
    assert merged.compare(left) is Order.NEWER
    assert merged.compare(right) is Order.NEWER


def test_merging_an_older_version_changes_nothing() -> None:
    assert v(a=2, b=2).merge(v(a=1)) == v(a=2, b=2)
    assert v(a=1).merge(v(a=1)) == v(a=1)


@pytest.mark.parametrize(
    "vector",
    [v(), v(a=1), v(a=1, b=2, c=3), Vector.of({A: MAX_COUNTER})],
)
def test_a_vector_survives_a_trip_over_the_wire(vector: Vector) -> None:
    assert Vector.from_json(json.loads(json.dumps(vector.to_json()))) == vector


def test_the_wire_form_is_an_object_of_counters() -> None:
    assert v(a=1, b=2).to_json() == {A: 1, B: 2}


def test_the_limits_themselves_are_allowed() -> None:
    many = {f"{n:016x}": n + 1 for n in range(MAX_ENTRIES)}
    assert len(Vector.from_json(many).counters) == MAX_ENTRIES
    assert Vector.from_json({A: MAX_COUNTER}).get(A) == MAX_COUNTER


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        [[A, 1]],
        "aaaaaaaaaaaaaaaa",
        1,
        True,
        {f"{n:016x}": 1 for n in range(MAX_ENTRIES + 1)},
    ],
    ids=["null", "list", "pairs", "string", "int", "bool", "too-many"],
)
def test_from_json_refuses_what_is_not_an_object_of_bounded_size(data: object) -> None:
    with pytest.raises(WireError):
        Vector.from_json(data)


@pytest.mark.parametrize(
    "key",
    ["", "a" * 15, "a" * 17, "A" * 16, "g" * 16, "aaaaaaaa aaaaaaa", "\uff41" * 16, 7, None],
)
def test_from_json_refuses_a_key_that_is_not_16_lowercase_hex(key: object) -> None:
    with pytest.raises(WireError):
        Vector.from_json({key: 1})


@pytest.mark.parametrize(
    "counter",
    [0, -1, -(2**63), True, False, 1.0, 1.5, MAX_COUNTER + 1, 2**100, "1", None, [1], {}],
)
def test_from_json_refuses_a_counter_that_is_not_a_positive_64_bit_integer(
    counter: object,
) -> None:
    with pytest.raises(WireError):
        Vector.from_json({A: 1, B: counter})


def random_vector(rng: random.Random) -> Vector:
    return Vector.of({key: rng.randrange(4) for key in (A, B, C)})


def test_compare_and_merge_obey_the_partial_order_on_random_vectors() -> None:
    rng = random.Random(20240607)
    opposite = {
        Order.NEWER: Order.OLDER,
        Order.OLDER: Order.NEWER,
        Order.EQUAL: Order.EQUAL,
        Order.CONCURRENT: Order.CONCURRENT,
    }
    seen = set()
    for _ in range(4000):
        a, b = random_vector(rng), random_vector(rng)
        order = a.compare(b)
        seen.add(order)
        assert b.compare(a) is opposite[order], (a, b)
        assert (order is Order.EQUAL) == (a == b), (a, b)
        merged = a.merge(b)
        assert merged == b.merge(a)
        assert merged.compare(a) in (Order.NEWER, Order.EQUAL), (a, b)
        assert merged.compare(b) in (Order.NEWER, Order.EQUAL), (a, b)
        key = rng.choice((A, B, C))
        assert merged.bump(key).compare(a) is Order.NEWER
        assert merged.bump(key).compare(b) is Order.NEWER
    assert seen == set(Order)  # the generator reaches every case


def test_bump_never_goes_below_its_floor_so_a_wiped_index_cannot_reuse_a_counter():
    first = Vector().bump(A, floor=1_700_000_000)
    again_after_wipe = Vector().bump(A, floor=1_700_000_005)
    assert first.get(A) == 1_700_000_000
    assert again_after_wipe.compare(first) is Order.NEWER
    assert first.bump(A, floor=5).get(A) == 1_700_000_001  # past its own counter all the same


def test_a_node_can_bump_any_vector_it_takes() -> None:
    assert v(a=3, b=MAX_COUNTER).can_bump(A)  # another's counter at the top is no matter
    assert Vector.of({A: MAX_OWN_COUNTER}).can_bump(A)
    assert not Vector.of({A: MAX_OWN_COUNTER + 1}).can_bump(A)
    full = Vector.of({f"{n:016x}": 1 for n in range(MAX_ENTRIES)})
    assert not full.can_bump("f" * 16)  # no room for a 1025th entry
    assert full.can_bump(f"{0:016x}")  # a node already named bumps in place
