"""Where nodes may be: addresses from mDNS, --peer and members' hellos, each a hint to be proven
by its TLS certificate, dialled at a pace and backed off while it does not answer."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from meshsync.core.ids import NodeId
from meshsync.core.throttle import shown
from meshsync.core.wire import MemberAddress
from meshsync.net.discovery import Advert, own_networks
from meshsync.node.peers import Peers

log = logging.getLogger("meshsync")

HINT_RETRY = 5.0  # an advertised address that did not answer is tried again after this long,
HINT_RETRY_MAX = 300.0  # doubling each time up to this
MAX_HINTS = 64  # advertised addresses remembered (--peer addresses come on top)
NEW_HINTS_PER_SECOND = 16  # new addresses are first dialled at most this often, however many
ADDRESSES_PER_ADVERT = 4
GOODBYE_EVERY = 1.0  # mDNS goodbyes are unauthenticated: at most one round of checks a second


@dataclass(slots=True)
class Hint:
    """An address to try: from mDNS or --peer, unproven until its TLS certificate shows a key."""

    claimed_id: str = ""
    static: bool = False
    next_try: float = 0.0
    retry: float = HINT_RETRY


class AddressBook:
    """The addresses to try, and when; `wake` is set when one is due sooner than the next beat."""

    def __init__(self, peers: Peers, static: tuple[str, ...], wake: asyncio.Event) -> None:
        self._peers = peers
        self._wake = wake
        self.hints: dict[str, Hint] = {a: Hint(static=True) for a in static}
        self._next_new_dial = 0.0
        self._goodbye_wake = 0.0

    def on_advert(self, advert: Advert) -> None:
        """An mDNS advertisement: a hint of where a node may be, to be proven by its key.

        Anyone on the LAN can advertise anything, so only addresses on our own networks are
        dialled (never loopback: that would make us a reflector to local services), a few per
        advert, a bounded number in all, each backing off while it does not answer.
        """
        if advert.claimed_id == str(self._peers.me):
            return
        networks = own_networks()
        wake = False
        for ip in advert.addresses[:ADDRESSES_PER_ADVERT]:
            address = f"{ip}:{advert.port}"
            if (dialable(ip, networks) and self._peers.roster.at(address) is None
                    and self.add(address, advert.claimed_id)):
                wake = True
        if wake:
            self._wake.set()

    def learn(self, members: tuple[MemberAddress, ...]) -> None:
        """Where a member says members we trust listen: hints, so that a mesh formed through
        one `--peer` outlives that node. Each is still proven by its TLS certificate, and
        filtered as an advert is: a member cannot make us dial where it likes."""
        peers = self._peers
        unknown = [m for m in members if m.id != peers.me
                   and peers.roster.at(m.address) is None and not peers.reached(m.id)]
        if not unknown:
            return  # the steady state: everyone it names is up here already
        networks = own_networks()
        trusted = {NodeId.of_key(key): key for key in peers.trust.known_keys()}
        wake = False
        for member in unknown:
            key = trusted.get(member.id)
            host = host_of(member.address).strip("[]")
            if (key is not None and dialable(host, networks)
                    and peers.trust.is_trusted(key, host)
                    and self.add(member.address, str(member.id))):
                wake = True
        if wake:
            self._wake.set()

    def add(self, address: str, claimed_id: str = "") -> bool:
        """Remember an address to try; True if it is new. The most backed-off hint makes room."""
        hint = self.hints.get(address)
        if hint is not None:
            # Re-advertising does not reset the backoff: the advertiser does not pace our dialling.
            hint.claimed_id = claimed_id or hint.claimed_id
            return False
        learned = [a for a, h in self.hints.items() if not h.static]
        if len(learned) >= MAX_HINTS:
            del self.hints[max(learned, key=lambda a: self.hints[a].next_try)]
        # A flood of adverts queues its addresses instead of dialling them all at once; the
        # queue is as long as the hints kept, so a new one waits seconds at the most.
        now = self._peers.clock.now()
        self._next_new_dial = min(max(now, self._next_new_dial),
                                  now + MAX_HINTS / NEW_HINTS_PER_SECOND)
        self.hints[address] = Hint(claimed_id=claimed_id, next_try=self._next_new_dial)
        self._next_new_dial += 1 / NEW_HINTS_PER_SECOND
        return True

    def back_off(self, address: str) -> None:
        """Nobody we would greet answered at `address`: try it again later, twice as late as
        the time before."""
        hint = self.hints.get(address)
        if hint is not None:
            hint.next_try = self._peers.clock.now() + hint.retry
            hint.retry = min(hint.retry * 2, HINT_RETRY_MAX)

    def answered(self, address: str) -> None:
        """A node answered our hello at `address`: a learned hint has served (the roster has
        the address now), a --peer one starts over at the shortest retry."""
        hint = self.hints.get(address)
        if hint is not None and not hint.static:
            del self.hints[address]
        elif hint is not None:
            hint.retry = HINT_RETRY

    def on_mdns_goodbye(self, instance: str) -> None:
        # A goodbye is unauthenticated, so it is only a reason to ask every peer at once: a node
        # that really stopped no longer answers, and one that did not keeps its seat.
        now = self._peers.clock.now()
        if now - self._goodbye_wake >= GOODBYE_EVERY:
            self._goodbye_wake = now
            log.debug("mDNS goodbye from %s", shown(instance))
            self._wake.set()


def host_of(address: str) -> str:
    """The IP address of a `host:port` address."""
    return address.rpartition(":")[0]


def dialable(ip: str, networks: list[ipaddress.IPv4Network]) -> bool:
    """Whether an address a peer told us of may be dialled: on one of our own networks, and
    not loopback (that would make us a reflector to local services)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not parsed.is_loopback and any(parsed in net for net in networks)
