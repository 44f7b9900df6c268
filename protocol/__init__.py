"""Secure aggregation for ztfl: double masking (Bonawitz et al. 2017) over a SecAgg+ neighbour graph.

Pure protocol code, no I/O and no clock: the agent and the gateway move the frames (bytes) and
decide when a collection window ends. The exact byte-level specification is docs/protocol.md.

API (one session object per role and round; frames in, frames out):

    from ztfl.protocol import RoundConfig, ServerSession, ClientSession, EpochKeys, Stage

    config = RoundConfig.for_range(dim=..., max_clients=100, threshold=67, mask_bits=32)

    # gateway                                     # agent u
    server = ServerSession(config, gw_key,        keys = EpochKeys.generate(epoch)   # reuse per epoch
                           directory, epoch, rnd) client = ClientSession(u, id_key, directory, keys, rnd)
    frame = server.round_config()  ----------->   reply = client.receive(frame)       # ADVERTISE_KEYS
    server.receive(reply)          <-----------
    out = server.close_stage()     ----------->   reply = client.receive(out.frame_for(u))  # SHARE_KEYS
    ...                                           client.set_input(update, weight)  # before the relay
    repeat receive/close_stage for ShareKeys, MaskedInputCollection, ConsistencyCheck, Unmasking
    server.result.mean()  # weighted mean; .sums, .total_weight, .survivors, .dropped

`directory` maps client ids to their enrolled Ed25519 VerifyKeys, and id 0 to the gateway's.
`StageOutput` holds one `broadcast` frame for `recipients` and/or per-client `unicast` frames.
`session.stage` is a `Stage`; a refused frame raises a `protocol.errors.ProtocolError` subclass
and leaves the session unchanged (`RoundAborted` is final). `wire.decode_frame` parses frames
for routing (type, sender, epoch, round) without any key.

Key-reuse rounds (`RoundConfig(..., key_reuse=True)`, docs/protocol.md 1.8, 2.7) need nothing more
from the caller: both sessions derive the client's session key from its epoch keys and the server's
identity key, tag the frames after ADVERTISE_KEYS instead of signing them, and the unmasking request
becomes one frame per client (`StageOutput.unicast`). `session.work` counts a client's Ed25519 and
tag operations.

Key epochs (protocol.epochs): the agent gets its keys from a `ClientKeyring` per round
(`keyring.keys_for(wire.peek(config_frame).epoch, round_id, now)`, then `keyring.finish(session)`),
the gateway its epoch id from an `EpochSchedule` (`epoch_for(round_id, now)`, pass
`revealed_keys=schedule.revealed_keys` to the ServerSession, then `schedule.finish(server)`).
"""
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import ACTIVE, SEMI_HONEST, RoundConfig
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule, RekeyReason
from ztfl.protocol.errors import ProtocolError, RoundAborted
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.server import AggregateResult, ServerSession, StageOutput
from ztfl.protocol.stages import Stage

__all__ = ["ACTIVE", "SEMI_HONEST", "AggregateResult", "ClientKeyring", "ClientSession", "EpochKeys",
           "EpochPolicy", "EpochSchedule", "ProtocolError", "RekeyReason", "RoundAborted", "RoundConfig",
           "ServerSession", "Stage", "StageOutput"]
