"""The gateway's handle on one cohort's secure aggregation: the protocol's ServerSession plus the
choices the gateway makes for it (fixed-point range per mask width, thresholds, who is still
expected in each stage, and addressing of the frames it sends)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nacl.signing import SigningKey, VerifyKey

from ztfl.privacy.params import DpParams
from ztfl.protocol import wire
from ztfl.protocol.config import ACTIVE, RoundConfig
from ztfl.protocol.errors import UnknownSender
from ztfl.protocol.server import ServerSession, StageOutput
from ztfl.protocol.stages import Stage

CLIP = 8.0                                  # model deltas are clipped to [-8, 8]
FRAC_BITS = {32: 16, 64: 24}                # 32-bit masks leave room for 16 fractional bits
MAX_WEIGHT_CAP = 1 << 20

STAGE_KEYS = {Stage.ADVERTISE_KEYS: "advertise", Stage.GRAPH_REVEAL: "reveal", Stage.SHARE_KEYS: "share",
              Stage.MASKED_INPUT_COLLECTION: "masked", Stage.CONSISTENCY_CHECK: "consistency",
              Stage.UNMASKING: "unmask", Stage.DONE: "done", Stage.ABORTED: "aborted"}


@dataclass
class Outgoing:
    to: int | None          # protocol client id, or None for every participant
    stage: str
    frame: bytes


def cohort_round_config(mask_bits: int, dim: int, threshold: int, max_clients: int,
                        key_reuse: bool = False, dp: DpParams | None = None) -> RoundConfig:
    """The round configuration the gateway announces to a cohort; with distributed DP it carries
    the signed DP record (`dp` as privacy.params.DpParams.signed gives it)."""
    frac = FRAC_BITS[mask_bits]
    return RoundConfig(dim=dim, threshold=threshold, max_clients=max(2, max_clients),
                       mask_bits=mask_bits, frac_bits=frac, clip_q=clip_q(mask_bits),
                       max_weight=CohortAggregation.max_weight(mask_bits, max(2, max_clients)), security=ACTIVE,
                       key_reuse=key_reuse, dp=None if dp is None else dp.to_config())


def clip_q(mask_bits: int) -> int:
    """The per-coordinate bound of an encoded update, in fixed-point units."""
    return int(round(CLIP * 2 ** FRAC_BITS[mask_bits]))


class CohortAggregation:
    @staticmethod
    def max_weight(mask_bits: int, n: int) -> int:
        """Largest integer weight with which n clipped updates cannot wrap the modulus."""
        return max(1, min(MAX_WEIGHT_CAP, ((1 << (mask_bits - 1)) - 1) // (n * clip_q(mask_bits))))

    def __init__(self, round_id: int, epoch: int, mask_bits: int, dim: int, threshold: int,
                 max_clients: int, identities: dict[int, bytes], server_identity: SigningKey,
                 key_reuse: bool = False, revealed_keys: set[bytes] | None = None, dp: DpParams | None = None):
        config = cohort_round_config(mask_bits, dim, threshold, max_clients, key_reuse, dp)
        # revealed_keys: the cohort's mask keys whose secret a round reconstructed (refused for good).
        self.server = ServerSession(config, server_identity,
                                    {sid: VerifyKey(pk) for sid, pk in identities.items()}, epoch, round_id,
                                    revealed_keys=revealed_keys)
        self.members = frozenset(identities)
        self.fell_out: dict[int, str] = {}

    @property
    def stage_key(self) -> str:
        return STAGE_KEYS[self.server.stage]

    @property
    def deadline_key(self) -> str:
        """The deadline the current stage runs under: the graph reveal (a sparse graph's commit
        and reveal, one small frame per member) shares the advertisement's."""
        return "advertise" if self.server.stage is Stage.GRAPH_REVEAL else self.stage_key

    def start(self) -> list[Outgoing]:
        return [Outgoing(None, "config", self.server.round_config())]

    def receive(self, sid: int, frame: bytes) -> None:
        # The frame is signed by its sender; also insist it arrived on that sender's own topic.
        if wire.peek(frame).sender != sid:
            raise UnknownSender(f"frame on client {sid}'s topic claims another sender")
        self.server.receive(frame)

    def _collected_and_expected(self) -> tuple[set, set]:
        s = self.server
        return {
            Stage.ADVERTISE_KEYS: (set(s.adverts), set(self.members)),
            Stage.GRAPH_REVEAL: (set(s.reveals), set(s.u1)),
            Stage.SHARE_KEYS: (set(s.shares), set(s.u1)),
            Stage.MASKED_INPUT_COLLECTION: (set(s.masked_from), set(s.u2)),
            Stage.CONSISTENCY_CHECK: (set(s.consistency), set(s.survivors)),
            Stage.UNMASKING: (set(s.unmask), set(s.consistency)),
        }.get(s.stage, (set(), set()))

    def stage_complete(self, gone: set[int] = frozenset()) -> bool:
        """Everyone still expected has answered; `gone` are clients known to be offline (their
        MQTT will arrived), who are not waited for until the deadline."""
        got, expected = self._collected_and_expected()
        return (expected - set(gone)) <= got

    def close_stage(self) -> list[Outgoing]:
        got, expected = self._collected_and_expected()
        stage = self.stage_key
        for sid in expected - got:
            self.fell_out.setdefault(sid, f"dropped out in stage {stage}")
        return self._outgoing(self.server.close_stage())

    def abort(self, reason: str) -> list[Outgoing]:
        """End the round here (nothing more is unmasked); the ABORT frame for the participants."""
        return self._outgoing(self.server.abort(reason))

    def _outgoing(self, out: StageOutput) -> list[Outgoing]:
        """What each client gets is `out.frame_for(client)`: one publication on the broadcast topic
        when that is the same frame for every recipient, else one frame per client on its own topic
        (a client must never get both its own frame and the broadcast)."""
        if not out.unicast:
            return [Outgoing(None, self.stage_key, out.broadcast)] if out.broadcast is not None else []
        frames = []
        for sid in sorted(set(out.recipients) | set(out.unicast)):
            frame = out.frame_for(sid)
            if frame is not None:
                frames.append(Outgoing(sid, self.stage_key, frame))
        return frames

    @property
    def failed(self) -> bool:
        return self.server.stage is Stage.ABORTED

    @property
    def failure_reason(self) -> str:
        return self.server.abort_reason or ""

    @property
    def finished(self) -> bool:
        return self.server.stage is Stage.DONE

    def result(self) -> tuple[np.ndarray, int]:
        r = self.server.result
        return r.mean().astype(np.float32), r.total_weight

    def survivors(self) -> set[int]:
        return set(self.server.survivors) if self.finished else set()

    def dropped_reason(self, sid: int) -> str:
        return self.fell_out.get(sid, "round aborted" if self.failed else "dropped")
