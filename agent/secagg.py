"""The agent's handle on one secure-aggregation round: the protocol's ClientSession plus the one
thing the daemon adds, waiting for local training.

The protocol needs the update when the shares are relayed (stage 3). If SHARES_RELAY arrives
while training still runs, the frame is held and replayed as soon as the update is provided;
the earlier stages never wait for training.
"""
from __future__ import annotations

import numpy as np
from nacl.signing import SigningKey, VerifyKey

from protocol import wire
from protocol.client import ClientSession
from protocol.keys import EpochKeys

# Which MQTT topic kind carries each client frame type: masked inputs have their own topic.
_KIND = {wire.MASKED_INPUT: "masked"}


def frame_type(frame: bytes) -> int:
    return frame[3] if len(frame) >= wire.HEADER_BYTES else -1


class AgentAggregation:
    def __init__(self, sid: int, identity: SigningKey, server_pk: bytes, peers: dict[int, bytes],
                 round_id: int, epoch: int):
        directory = {wire.SERVER_ID: VerifyKey(server_pk), **{s: VerifyKey(pk) for s, pk in peers.items()}}
        self.session = ClientSession(sid, identity, directory, EpochKeys.generate(epoch), round_id)
        self.held_relay: bytes | None = None
        self.has_input = False

    @property
    def wants_input(self) -> bool:
        return not self.has_input

    def _reply(self, frame: bytes) -> list[tuple[str, bytes]]:
        reply = self.session.receive(frame)
        if reply is None:
            return []
        return [(_KIND.get(frame_type(reply), "protocol"), reply)]

    def receive(self, frame: bytes) -> list[tuple[str, bytes]]:
        if frame_type(frame) == wire.SHARES_RELAY and not self.has_input:
            self.held_relay = frame
            return []
        return self._reply(frame)

    def provide_input(self, update: np.ndarray, weight: int) -> list[tuple[str, bytes]]:
        config = self.session.config
        if config is not None:
            weight = max(1, min(weight, config.max_weight))
        self.session.set_input(update, weight)
        self.has_input = True
        if self.held_relay is not None:
            frame, self.held_relay = self.held_relay, None
            return self._reply(frame)
        return []

    @property
    def stage(self) -> str:
        return self.session.stage.value
