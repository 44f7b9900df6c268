"""The agent's handle on one secure-aggregation round: the protocol's ClientSession plus what the
daemon adds: waiting for local training, checking the round configuration against the
announcement, and the client side of distributed DP.

The protocol needs the update when the shares are relayed (stage 3). If SHARES_RELAY arrives
while training still runs, the frame is held and replayed as soon as the update is provided;
the earlier stages never wait for training. The input is encoded at that point, when the round
configuration (fixed-point bits, dimension, weight bound) is known: with DP the update is clipped
in L2 norm, encoded with weight 1 and given integer Skellam noise (privacy.add_noise) before
masking.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from nacl.bindings import crypto_sign_PUBLICKEYBYTES as KEY_BYTES
from nacl.signing import SigningKey, VerifyKey

from ztfl.privacy import DpParams, add_noise, clip_l2
from ztfl.protocol import fixedpoint, wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.errors import ConfigurationError, MalformedMessage
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
    announcement is still refused when the round starts, not later."""

    def __init__(self, raw: dict[int, bytes]):
        for sid, pk in raw.items():
            if not isinstance(pk, bytes):
                raise TypeError(f"identity key of {sid} must be bytes")
            if len(pk) != KEY_BYTES:
                raise ValueError(f"identity key of {sid} is {len(pk)} bytes, expected {KEY_BYTES}")
        self._raw = raw
        self._built: dict[int, VerifyKey] = {}

    def __getitem__(self, sid: int) -> VerifyKey:
        key = self._built.get(sid)
        if key is None:
            key = self._built[sid] = VerifyKey(self._raw[sid])
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
                 rng: np.random.Generator | None = None):
        directory = PeerKeys({wire.SERVER_ID: server_pk, **peers})
        self.session = ClientSession(sid, identity, directory, keys, round_id)
        self.key_reuse = key_reuse
        self.dp = dp
        self.rng = rng if rng is not None else np.random.default_rng()   # OS entropy
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
        return [(_KIND.get(frame_type(reply), "protocol"), reply)]

    def _check_config(self) -> None:
        """The signed configuration must be the round the announcement described: keys kept for
        reuse must never serve a classic round (it would share their secret), and DP parameters
        must fit the configuration they are applied in."""
        config = self.session.config
        problem = ""
        if config.key_reuse != self.key_reuse:
            problem = (f"ROUND_CONFIG key reuse {config.key_reuse} differs from the announcement's "
                       f"{self.key_reuse}")
        elif self.dp is not None and (self.dp.frac_bits, self.dp.dim) != (config.frac_bits, config.dim):
            problem = (f"DP parameters for {self.dp.dim} values at {self.dp.frac_bits} fractional bits, "
                       f"the round has {config.dim} at {config.frac_bits}")
        if problem:
            self.refused = problem
            raise ConfigurationError(problem)

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
        if self.dp is None:
            self.session.set_input(update, max(1, min(weight, config.max_weight)))
            return
        clipped = clip_l2(update, self.dp.clip_norm)
        words = fixedpoint.encode(clipped, 1, config.frac_bits, config.clip_q, config.mask_bits)
        self.session.set_encoded_input(add_noise(words, self.dp, self.rng))

    @property
    def stage(self) -> str:
        return self.session.stage.value
