"""The agent's handle on one secure-aggregation round: the protocol's ClientSession plus what the
daemon adds: waiting for local training, checking the round configuration against the
announcement, and the client side of distributed DP.

The protocol needs the update when the shares are relayed (stage 3). If SHARES_RELAY arrives
while training still runs, the frame is held and replayed as soon as the update is provided;
the earlier stages never wait for training. The input is encoded at that point, when the round
configuration (fixed-point bits, dimension, weight bound) is known: with DP the update is clipped
in L2 norm, encoded with weight 1 and given integer Skellam noise (privacy.add_noise) before
masking. The DP applied is the one signed in the round configuration, admitted by the agent's
privacy guard (privacy.guard: its floor and its own ledger), never the announcement's alone; the
ledger is charged when the noisy masked input is about to leave.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from nacl.bindings import crypto_sign_PUBLICKEYBYTES as KEY_BYTES
from nacl.signing import SigningKey, VerifyKey

from ztfl.privacy import DpParams, add_noise, clip_l2
from ztfl.privacy.errors import PrivacyRefused
from ztfl.privacy.guard import PrivacyGuard
from ztfl.protocol import fixedpoint, wire
from ztfl.protocol.client import DEFAULT_FLOOR, ClientSession
from ztfl.protocol.config import SecurityFloor
from ztfl.protocol.errors import ConfigurationError, MalformedMessage, RoundKindMismatch
from ztfl.protocol.keys import EpochKeys

# Which MQTT topic kind carries each client frame type: masked inputs have their own topic.
_KIND = {wire.MASKED_INPUT: "masked"}


def frame_type(frame: bytes) -> int:
    """The message type in a frame's header, or -1 when the header does not parse (the session
    then refuses the frame with the reason)."""
    try:
        return wire.peek(frame).type
    except MalformedMessage:
        return -1


class PeerKeys(Mapping):
    """The identity verify keys of a round's participants by id, each VerifyKey built on first use.

    A client uses the server's key and its neighbours' (about 2 log2 N of the N participants);
    building all N per round cost more than the neighbourhood's own work at N = 1,000. The
    sizes are checked here, up front, as building every key would have: a malformed key in the
    announcement is still refused when the round starts, not later. `check(sid)`, if given, runs
    before a key is first used and raises to refuse it (agent.trust: its certificate's signature)."""

    def __init__(self, raw: dict[int, bytes], check: Callable[[int], None] | None = None):
        for sid, pk in raw.items():
            if not isinstance(pk, bytes):
                raise TypeError(f"identity key of {sid} must be bytes")
            if len(pk) != KEY_BYTES:
                raise ValueError(f"identity key of {sid} is {len(pk)} bytes, expected {KEY_BYTES}")
        self._raw = raw
        self._check = check
        self._built: dict[int, VerifyKey] = {}

    def __getitem__(self, sid: int) -> VerifyKey:
        key = self._built.get(sid)
        if key is None:
            raw = self._raw[sid]
            if self._check is not None:
                self._check(sid)
            key = self._built[sid] = VerifyKey(raw)
        return key

    def __contains__(self, sid) -> bool:
        return sid in self._raw

    def __iter__(self) -> Iterator[int]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def built(self) -> int:
        """How many VerifyKey objects exist so far."""
        return len(self._built)


class AgentAggregation:
    def __init__(self, sid: int, identity: SigningKey, server_pk: bytes, peers: dict[int, bytes],
                 round_id: int, keys: EpochKeys, key_reuse: bool = False, dp: DpParams | None = None,
                 noise=None, check_peer: Callable[[int], None] | None = None,
                 privacy: PrivacyGuard | None = None, floor: SecurityFloor = DEFAULT_FLOOR):
        # The server's key is checked by the caller before the session exists; a peer's by
        # `check_peer` when it is first used (agent.trust).
        check = None if check_peer is None else (lambda sid: sid == wire.SERVER_ID or check_peer(sid))
        directory = PeerKeys({wire.SERVER_ID: server_pk, **peers}, check)
        # `floor`: this agent's provisioned security floor (never the round's say).
        self.session = ClientSession(sid, identity, directory, keys, round_id, floor=floor)
        self.key_reuse = key_reuse
        self.dp = dp                    # what the announcement said: it must match the signed DP
        self.signed_dp: DpParams | None = None
        self.noise = noise              # privacy.sampling.KeyedWords (tests, benchmarks); None: OS CSPRNG
        self.privacy = privacy if privacy is not None else PrivacyGuard.in_memory()
        self.held_relay: bytes | None = None
        self.pending: tuple[np.ndarray, int] | None = None
        self.refused = ""

    @property
    def wants_input(self) -> bool:
        return self.pending is None

    @property
    def has_input(self) -> bool:
        return self.pending is not None

    def _reply(self, frame: bytes) -> list[tuple[str, bytes]]:
        reply = self.session.receive(frame)
        if frame_type(frame) == wire.ROUND_CONFIG:
            self._check_config()          # before the advertisement leaves
        if reply is None:
            return []
        if frame_type(reply) == wire.MASKED_INPUT and self.signed_dp is not None:
            self._refusing(self.privacy.spend, self.signed_dp,
                           f"epoch {self.session.epoch} round {self.session.round_id}")
        return [(_KIND.get(frame_type(reply), "protocol"), reply)]

    def _refusing(self, check, *args):
        """Run a privacy check; its refusal is final for the round."""
        try:
            return check(*args)
        except PrivacyRefused as exc:
            self.refused = str(exc)
            raise

    def _check_config(self) -> None:
        """The signed configuration must be the round the announcement described: keys kept for
        reuse must never serve a classic round (it would share their secret), and its DP must be the
        announced one and pass the privacy guard."""
        config = self.session.config
        if config.key_reuse != self.key_reuse:
            self.refused = (f"ROUND_CONFIG key reuse {config.key_reuse} differs from the announcement's "
                            f"{self.key_reuse}")
            raise RoundKindMismatch(self.refused)
        self.signed_dp = self._refusing(self.privacy.admit, self.dp, config)

    def receive(self, frame: bytes) -> list[tuple[str, bytes]]:
        if self.refused:
            raise ConfigurationError(f"round refused: {self.refused}")
        if frame_type(frame) == wire.SHARES_RELAY:
            if self.pending is None:
                self.held_relay = frame
                return []
            self._load_input()
        return self._reply(frame)

    def provide_input(self, update: np.ndarray, weight: int) -> list[tuple[str, bytes]]:
        """The float update and its integer weight (ignored with DP: every client weighs 1)."""
        self.pending = (np.asarray(update), int(weight))
        if self.held_relay is not None and not self.refused:
            frame, self.held_relay = self.held_relay, None
            self._load_input()
            return self._reply(frame)
        return []

    def _load_input(self) -> None:
        config = self.session.config
        update, weight = self.pending
        dp = self.signed_dp
        if dp is None:
            self.session.set_input(update, max(1, min(weight, config.max_weight)))
            return
        clipped = clip_l2(update, dp.clip_norm)
        words = fixedpoint.encode(clipped, 1, config.frac_bits, config.clip_q, config.mask_bits)
        self.session.set_encoded_input(add_noise(words, dp, self.noise))

    @property
    def stage(self) -> str:
        return self.session.stage.value
