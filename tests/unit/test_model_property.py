"""A model of a few nodes that sync by `core.plan` alone: whatever users do and whatever order
versions arrive in, every node ends on the same records and nothing a user wrote is lost.

Each node keeps what the folder keeps (a store of path -> record, the versions it waits for,
the losers it keeps aside) and does what the folder must do with plan's verdicts: judge what
arrives, write what it waits for (a file's blocks from any disk that holds them, or give it up),
keep a losing edit as a conflict copy, publish a resolution, judge its losers again after each
change and prune them. Users edit, touch, chmod, change kinds, delete and restart nodes; every
published version reaches every node, in an order hypothesis picks, until nothing can happen.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from meshsync.core import conflicts, plan
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Order, Vector

KEYS = ("0000000000000001", "7777777777777777", "8888888888888888", "ffffffffffffffff")
PATHS = (RelPath("notes.txt"), RelPath("photo"))
SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND
MAX_EVENTS = 20_000  # far past what any run here takes to settle: more is a resolution loop
# A few seconds by default, whatever the profile; more under HYPOTHESIS_PROFILE=fuzz.
EXAMPLES = max(500, settings().max_examples)


@dataclass
class Node:
    """One node's index: what its disk holds, what it waits for, the losers it keeps."""

    key: str
    store: dict[RelPath, FileRecord] = field(default_factory=dict)
    pending: dict[RelPath, FileRecord] = field(default_factory=dict)
    losers: dict[tuple[RelPath, str], FileRecord] = field(default_factory=dict)
    seconds: set[int] = field(default_factory=set)  # the mtimes its user has written

    def kept(self, path: RelPath) -> list[FileRecord]:
        return [r for (p, _), r in self.losers.items() if p == path]


@dataclass
class World:
    """The nodes, the versions in flight, and what users wrote and saw."""

    nodes: list[Node]
    rng: random.Random
    inbox: list[tuple[int, FileRecord]] = field(default_factory=list)
    published: int = 0
    resolutions: int = 0
    given_up: int = 0
    events: int = 0
    written: dict[str, Kind] = field(default_factory=dict)  # the contents users made
    replaced: set[str] = field(default_factory=set)  # replaced by a user who saw them
    versioned: set[str] = field(default_factory=set)  # kept only under .meshsync/versions/
    made: set[tuple[str, int, str]] = field(default_factory=set)  # (token, mtime, by whom)

    # -- users ----------------------------------------------------------------------------------
    def edit(self, n: int, path: RelPath, kind: Kind, second: int, mode: int) -> None:
        node = self.nodes[n]
        token = f"{len(self.written)}"
        mtime = self._mtime(node, second)
        if kind is not Kind.DIR:  # a directory holds nothing to lose
            self.written[token] = kind
        blocks = (token.encode().ljust(32, b"."),) if kind is Kind.FILE else ()
        self._change(n, FileRecord(path, kind, Vector(), node.key, size=len(blocks), mode=mode,
                                   mtime_ns=mtime, blocks=blocks,
                                   target=token if kind is Kind.SYMLINK else ""))

    def touch(self, n: int, path: RelPath, second: int) -> None:
        """The same content with a new mtime: alike to the version it replaces."""
        ours = self.nodes[n].store.get(path)
        if ours is not None and not ours.deleted:
            self._change(n, replace(ours, mtime_ns=self._mtime(self.nodes[n], second)))

    def chmod(self, n: int, path: RelPath, mode: int) -> None:
        """The same content and mtime with other permissions."""
        ours = self.nodes[n].store.get(path)
        if ours is not None and not ours.deleted and ours.mode != mode:
            self._change(n, replace(ours, mode=mode))

    def delete(self, n: int, path: RelPath) -> None:
        ours = self.nodes[n].store.get(path)
        if ours is not None and not ours.deleted:
            self._change(n, ours.tombstone(Vector(), self.nodes[n].key))

    def restart(self, n: int) -> None:
        """The node forgets what it waits for and what was in flight to it, then catches up
        from every member's index."""
        self.nodes[n].pending.clear()
        self.inbox = [(to, r) for to, r in self.inbox if to != n]
        for other in self.nodes:
            if other is not self.nodes[n]:
                self.inbox.extend((n, r) for r in other.store.values())

    def _mtime(self, node: Node, second: int) -> int:
        # A conflict copy is named by its author and mtime, to the second: one author's two
        # contents of one second would share a name, so each user writes in seconds of its own.
        while second in node.seconds:
            second += 1
        node.seconds.add(second)
        return T0 + second * SECOND

    def _change(self, n: int, found: FileRecord) -> None:
        """What the scan does with a change it found: version it, store it, announce it."""
        node = self.nodes[n]
        ours = node.store.get(found.path)
        if ours is not None and not plan.alike(ours, found) and (token := _token(ours)):
            self.replaced.add(token)
        record = plan.local_change(ours, found, node.kept(found.path), node.key)
        if (token := _token(record)) and not conflicts.is_copy(record.path):
            self.made.add((token, record.mtime_ns, node.key))
        node.store[found.path] = record
        self._publish(n, record)
        self._rejudge(n)

    def _publish(self, n: int, record: FileRecord) -> None:
        self.published += 1
        self.inbox.extend((to, record) for to in range(len(self.nodes)) if to != n)

    # -- the folder -----------------------------------------------------------------------------
    def _weigh(self, node: Node, record: FileRecord) -> plan.Judgement:
        pending = node.pending.get(record.path)
        verdict = plan.judge(node.store.get(record.path), pending, record)
        if verdict.queue:
            node.pending[record.path] = record
        if verdict.drop_pending:
            node.pending.pop(record.path, None)
        if verdict.aside:
            _set_aside(node, record)
        if verdict.pending_aside and pending is not None:
            _set_aside(node, pending)
        return verdict

    def write(self, n: int, path: RelPath) -> bool:
        """Write the version the node waits for at `path`; False: it waits on, nothing changed."""
        node = self.nodes[n]
        wanted, ours = node.pending[path], node.store.get(path)
        verdict = plan.decide(ours, wanted)
        if verdict.action is plan.Action.TAKE and not self._available(wanted):
            if not plan.forsaken(wanted, *self._answers(node, path)):
                return False
            verdict = plan.Verdict(plan.Action.IGNORE)  # given up
            self.given_up += 1
        if verdict.action is plan.Action.TAKE:
            record = wanted
            if verdict.conflict and ours is not None:
                self._keep(n, ours)
            if verdict.resolve and ours is not None:
                record = plan.resolution(wanted, ours, node.key)
                self.resolutions += 1
                self._publish(n, record)
            node.store[path] = record
        del node.pending[path]
        self._rejudge(n)
        return True

    def _available(self, record: FileRecord) -> bool:
        """Whether some disk holds the blocks, at any path (a conflict copy shares them)."""
        if record.deleted or record.kind is not Kind.FILE:
            return True  # nothing to fetch
        return any(r.blocks == record.blocks and not r.deleted and r.kind is Kind.FILE
                   for m in self.nodes for r in m.store.values())

    def _answers(self, node: Node, path: RelPath) -> tuple[dict[str, FileRecord | None],
                                                           list[str]]:
        """What every other member announces it holds at `path` (all answer, here)."""
        others = [m for m in self.nodes if m is not node]
        return {m.key: m.store.get(path) for m in others}, [m.key for m in others]

    def _keep(self, n: int, loser: FileRecord) -> None:
        """What the folder's keeper does: a losing file goes beside the winner under the first
        free name of conflicts.names_for, and is then scanned as a new file; a link, or a file
        left no name, goes under versions/ (unless a copy holds its content already)."""
        token = _token(loser)
        if loser.kind is Kind.FILE:
            tag = hashlib.sha256(b"".join(loser.blocks)).hexdigest()[:8]
            for copy in conflicts.names_for(loser.path, loser.mtime_ns, loser.made_by, tag):
                there = self.nodes[n].store.get(copy)
                if there is None or there.deleted:
                    self._change(n, FileRecord(copy, Kind.FILE, Vector(), "", size=loser.size,
                                               mode=loser.mode, mtime_ns=loser.mtime_ns,
                                               blocks=loser.blocks))
                    return
                if there.same_content(loser):
                    return  # a copy holds it already
        if token:
            self.versioned.add(token)

    def _rejudge(self, n: int) -> None:
        """Judge the losers again (ours may have changed); prune those still losing that are
        superseded or that no member holds."""
        node = self.nodes[n]
        for key, loser in sorted(node.losers.items()):
            if node.losers.get(key) != loser:
                continue  # replaced meanwhile
            del node.losers[key]
            if not self._weigh(node, loser).aside:
                continue  # queued, or history
            if plan.pruned(loser, node.kept(loser.path), *self._answers(node, loser.path)):
                del node.losers[key]

    # -- the network ----------------------------------------------------------------------------
    def deliver(self, to: int, record: FileRecord) -> None:
        self._weigh(self.nodes[to], record)
        self._rejudge(to)

    def step(self, blocked: set[tuple[int, RelPath]]) -> bool:
        """Deliver a version or try a write, at random; False when nothing can happen."""
        writes = [(n, p) for n, node in enumerate(self.nodes) for p in sorted(node.pending)
                  if (n, p) not in blocked]
        if not self.inbox and not writes:
            return False
        self.events += 1
        pick = self.rng.randrange(len(self.inbox) + len(writes))
        if pick < len(self.inbox):
            self.deliver(*self.inbox.pop(pick))
            blocked.clear()
        elif self.write(*writes[pick - len(self.inbox)]):
            blocked.clear()
        else:
            blocked.add(writes[pick - len(self.inbox)])
        return True

    def settle(self) -> None:
        """Run until nothing can happen; what still waits then would wait for ever."""
        blocked: set[tuple[int, RelPath]] = set()
        while self.events < MAX_EVENTS:
            if self.step(blocked):
                continue
            for n in range(len(self.nodes)):
                self._rejudge(n)  # changes elsewhere may have left losers to prune
            if not self.step(blocked):
                return
        raise AssertionError(f"not settled after {MAX_EVENTS} events: a resolution loop")


def _token(record: FileRecord) -> str | None:
    """The user content a record holds, if any (a directory or a deletion holds none)."""
    if record.deleted or record.kind is Kind.DIR:
        return None
    if record.kind is Kind.SYMLINK:
        return record.target
    return record.blocks[0].rstrip(b".").decode()


def _set_aside(node: Node, record: FileRecord) -> None:
    """One loser per path and origin, the latest (what Index.add_losers keeps)."""
    key = (record.path, record.origin)
    old = node.losers.get(key)
    if old is None or record.version.compare(old.version) is not Order.OLDER:
        node.losers[key] = record


# -- what users do -----------------------------------------------------------------------------
NODE = st.integers(0, 3)
PATH = st.sampled_from((PATHS[0], PATHS[0], PATHS[1]))  # mostly one: it makes conflicts
SECONDS = st.integers(0, 5)  # few: mtimes tie across nodes, and later edits may be older
MODES = st.sampled_from((0o644, 0o600))
KINDS = st.sampled_from((Kind.FILE, Kind.FILE, Kind.SYMLINK, Kind.DIR))
OPS = st.one_of(
    *(st.tuples(st.just("edit"), NODE, PATH, KINDS, SECONDS, MODES) for _ in range(4)),
    st.tuples(st.just("touch"), NODE, PATH, SECONDS),
    st.tuples(st.just("chmod"), NODE, PATH, MODES),
    *(st.tuples(st.just("delete"), NODE, PATH) for _ in range(2)),
    st.tuples(st.just("restart"), NODE),
    *(st.tuples(st.just("steps"), st.integers(1, 30)) for _ in range(2)),
)
CHANGES = ("edit", "touch", "chmod", "delete")


def play(world: World, ops: list[tuple[object, ...]]) -> None:
    """The users' operations, with random deliveries where the ops say."""
    for name, *args in ops:
        if name == "steps":
            blocked: set[tuple[int, RelPath]] = set()
            for _ in range(int(args[0])):  # type: ignore[call-overload]
                world.step(blocked)
        else:
            n = int(args[0]) % len(world.nodes)  # type: ignore[call-overload]
            getattr(world, str(name))(n, *args[1:])


def check(world: World) -> None:
    """Every node holds the same records; nothing a user wrote is lost; nothing is left over."""
    first = world.nodes[0]
    for path in sorted(set().union(*(node.store for node in world.nodes))):
        held = {node.key: node.store.get(path) for node in world.nodes}
        one = first.store[path]
        # The same version: nodes that resolved one conflict each hold their own record of it.
        assert all(r is not None and r.version == one.version and plan.same_version(r, one)
                   for r in held.values()), f"{path} differs: {held}"
    for node in world.nodes:
        assert not node.pending, f"{node.key} waits for ever for {node.pending}"
        assert not node.losers, f"{node.key} still keeps {node.losers}"
    final = {_token(r): path for path, r in first.store.items() if not r.deleted}
    for token, kind in world.written.items():
        # Replaced by a user who saw it, or in the tree (perhaps as a conflict copy), or, for
        # a link (the folder makes no copy of one), kept under versions/.
        kept = token in world.replaced or token in final
        assert kept or (kind is Kind.SYMLINK and token in world.versioned), (
            f"the {kind} content {token} was lost")
    for content, path in final.items():
        copy = conflicts.parse(path)
        if copy is not None:
            # Named by a version of that content that a user made (not by whoever resolved), so
            # that every node keeping it names it alike; tagged with the content where two
            # losers of one node and second would share the plain name.
            tag = hashlib.sha256(b"".join(first.store[path].blocks)).hexdigest()[:8]
            assert any(path in (conflicts.copy_path(copy.original, mtime, by),
                                conflicts.copy_path(copy.original, mtime, by, tag))
                       for t, mtime, by in world.made if t == content), path


@settings(max_examples=EXAMPLES)
@given(nodes=st.integers(3, 4), ops=st.lists(OPS, min_size=1, max_size=14),
       rng=st.randoms(use_true_random=False))
def test_nodes_settle_on_the_same_tree_and_lose_nothing(
        nodes: int, ops: list[tuple[object, ...]], rng: random.Random) -> None:
    world = World([Node(k) for k in KEYS[:nodes]], rng)
    play(world, ops)
    world.settle()
    check(world)
    # Each resolution moves its node's version up a finite lattice (the joins of what users
    # made), so resolutions are few: a storm would run into MAX_EVENTS first.
    changes = sum(op[0] in CHANGES for op in ops)
    assert world.resolutions <= nodes * changes, (world.resolutions, changes)


CONCURRENT = st.lists(st.one_of(
    st.tuples(st.just("edit"), st.just(PATHS[0]), KINDS, SECONDS, MODES),
    st.tuples(st.just("touch"), st.just(PATHS[0]), SECONDS),
    st.tuples(st.just("chmod"), st.just(PATHS[0]), MODES),
    st.tuples(st.just("delete"), st.just(PATHS[0]))), min_size=2, max_size=4)


@settings(max_examples=EXAMPLES)
@given(changes=CONCURRENT, rng=st.randoms(use_true_random=False))
def test_concurrent_changes_settle_on_the_rules_winner_whatever_the_order(
        changes: list[tuple[object, ...]], rng: random.Random) -> None:
    """Each node changes one version they all hold; whatever order the changes and the
    resolutions they cause arrive in, the path ends as the rule's winner among the changes."""
    world = World([Node(k) for k in KEYS[:len(changes)]], rng)
    world.edit(0, PATHS[0], Kind.FILE, 0, 0o644)
    world.settle()
    base = world.nodes[0].store[PATHS[0]]
    for n, (name, *args) in enumerate(changes):
        getattr(world, str(name))(n, *args)
    made = [r for node in world.nodes if (r := node.store[PATHS[0]]) is not base]
    world.settle()
    check(world)
    if len(made) > 1:
        winner = next(r for r in made if all(r is o or plan.wins(r, o) for o in made))
        final = world.nodes[0].store[PATHS[0]]
        assert plan.same_version(final, winner), (final, winner)


# -- scenarios ---------------------------------------------------------------------------------
def test_three_concurrent_edits_end_the_same_in_every_arrival_order() -> None:
    """The fault once filed: the winner of three concurrent versions depended on arrival order.
    Every order of the six first deliveries, each written at once, resolutions last."""
    finals = set()
    for order in itertools.permutations(range(6)):
        world = World([Node(k) for k in KEYS[:3]], random.Random(0))
        for n, second in enumerate((2, 1, 2)):  # a tie in mtime: the lower author wins
            world.edit(n, PATHS[0], Kind.FILE, second, 0o644)
        edits, world.inbox = [world.inbox[i] for i in order], []
        for to, record in edits:
            world.deliver(to, record)
            if record.path in world.nodes[to].pending:
                world.write(to, record.path)
        world.settle()
        check(world)
        final = world.nodes[0].store[PATHS[0]]
        finals.add((_token(final), final.version))
    assert finals == {("0", Vector.of(dict.fromkeys(KEYS[:3], 1)))}


def test_a_conflict_copy_deleted_after_both_copies_came_stays_deleted() -> None:
    """Two nodes keep the same losing edit as a copy, each as a version of its own. The user
    deletes the copy where both versions were heard: the deletion descends from both, so the
    resolution of the two copies, made elsewhere meanwhile, does not bring it back."""
    world = World([Node(k) for k in KEYS[:3]], random.Random(1))
    world.edit(0, PATHS[0], Kind.FILE, 5, 0o644)  # W
    world.edit(1, PATHS[0], Kind.FILE, 1, 0o644)  # L, older: it loses to W
    winner, loser = world.nodes[0].store[PATHS[0]], world.nodes[1].store[PATHS[0]]
    world.inbox = []
    for to, record in ((2, loser), (2, winner), (1, winner)):  # 2 and 1 each keep L as a copy
        world.deliver(to, record)
        world.write(to, PATHS[0])
    copy = conflicts.copy_path(PATHS[0], loser.mtime_ns, loser.origin)
    copies = [world.nodes[n].store[copy] for n in (1, 2)]
    assert copies[0].version != copies[1].version
    for record in copies:
        world.deliver(0, record)
        if copy in world.nodes[0].pending:
            world.write(0, copy)
    world.delete(0, copy)
    world.settle()
    check(world)
    assert world.nodes[0].store[copy].deleted


def test_a_deletion_made_before_the_resolution_loses_nothing() -> None:
    """The fault once filed: the winner deleted, a loser kept aside came back. Now the node
    holding the loser resolves; a deletion of the winner made before it heard of that is
    concurrent with the resolution, which (a change) beats it: the winner's content stays, and
    the loser's is kept as a copy."""
    world = World([Node(k) for k in KEYS[:3]], random.Random(2))
    world.edit(0, PATHS[0], Kind.FILE, 5, 0o644)  # W
    world.edit(1, PATHS[0], Kind.FILE, 1, 0o644)  # L, older: it loses to W
    winner, loser = world.nodes[0].store[PATHS[0]], world.nodes[1].store[PATHS[0]]
    world.inbox = [(0, loser), (2, loser)]
    world.deliver(2, winner)
    world.write(2, PATHS[0])
    world.delete(2, PATHS[0])  # the user deletes W, not knowing L
    world.deliver(1, winner)
    world.write(1, PATHS[0])  # node 1 keeps L as a copy and publishes the resolution
    resolved = world.nodes[1].store[PATHS[0]]
    assert resolved.version == winner.version.merge(loser.version)
    assert resolved.author == KEYS[0]
    world.deliver(2, resolved)  # before L: else node 2 resolves L against its deletion first
    world.write(2, PATHS[0])
    world.settle()
    check(world)
    tree = {_token(r): path for path, r in world.nodes[0].store.items() if not r.deleted}
    assert tree["0"] == PATHS[0]
    assert conflicts.parse(tree["1"]) is not None
