"""Key epochs on the firmware, in real MicroPython, across rounds run by the CPython server:
the keyring keeps the keys of a gateway epoch, later rounds run no X25519 and are authenticated
with session tags (one Ed25519 verification and one signature per round), a firmware client
that drops mid-round is unmasked with round keys and comes back with the same keys, a new epoch
and a classic round bring new keys; every aggregate is exact."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort, expected_sums
from ztfl.protocol.stages import Stage
from ztfl.firmware_tools.micropython_host import FirmwareClient, drive_round

IDS = [1, 2, 3, 4]
FIRMWARE = (2, 4)


def test_firmware_epoch_with_a_dropout_a_new_epoch_and_a_classic_round_is_exact():
    reuse = RoundConfig(dim=24, threshold=3, max_clients=4, mask_bits=32, max_weight=8, key_reuse=True)
    classic = replace(reuse, key_reuse=False)
    policy = EpochPolicy(max_rounds=3)
    schedule = EpochSchedule(policy)
    cohort = Cohort.create(IDS)
    directory = cohort.directory
    raw_directory = {k: bytes(v) for k, v in directory.items()}
    keyrings = {c: ClientKeyring(policy) for c in IDS if c not in FIRMWARE}
    rng = np.random.default_rng(7)
    # (round id, configuration, client dropping and from which stage)
    plan = [(1, reuse, None), (2, reuse, (4, Stage.MASKED_INPUT_COLLECTION)), (3, reuse, None),
            (4, reuse, None), (5, classic, None)]
    firmware = {c: FirmwareClient() for c in FIRMWARE}
    seen = []
    try:
        for fw in firmware.values():
            fw.start_keyring(policy.max_rounds, policy.max_seconds)
        for round_id, config, drop in plan:
            epoch = schedule.epoch_for(round_id, float(round_id))
            inputs = {c: rng.normal(0, 1, config.dim).astype(np.float32) for c in IDS}
            weights = {c: 1 + c % 3 for c in IDS}
            clients, opened = {}, {}
            for c in IDS:
                if c in firmware:
                    opened[c] = firmware[c].open_keyring_session(c, cohort.identities[c].encode(), raw_directory,
                                                                 epoch, round_id, config.key_reuse, float(round_id))
                    firmware[c].set_input(inputs[c], weights[c])
                    clients[c] = firmware[c]
                else:
                    keys = keyrings[c].keys_for(epoch, round_id, float(round_id), config.key_reuse)
                    clients[c] = ClientSession(c, cohort.identities[c], directory, keys, round_id)
                    clients[c].set_input(inputs[c], weights[c])
            server = ServerSession(config, cohort.server_identity, directory, epoch, round_id,
                                   revealed_keys=schedule.revealed_keys)
            dropped = {drop[0]: drop[1]} if drop else {}
            drive_round(server, clients, dropped)
            survivors = [c for c in IDS if c not in dropped]
            expected, weight = expected_sums(config, inputs, weights, survivors)
            assert server.result is not None, server.abort_reason
            assert server.result.survivors == tuple(survivors)
            assert np.array_equal(server.result.sums, expected), round_id
            assert server.result.total_weight == weight
            finished = {c: firmware[c].finish() for c in FIRMWARE}
            for c in IDS:
                if c not in firmware:
                    keyrings[c].finish(clients[c])
            schedule.finish(server)
            seen.append((round_id, epoch, {c: opened[c]["reused_keys"] for c in FIRMWARE},
                         {c: finished[c]["work"] for c in FIRMWARE},
                         {c: finished[c]["agreements"] for c in FIRMWARE},
                         {c: finished[c]["rekeys"][-1] for c in FIRMWARE}))
    finally:
        for fw in firmware.values():
            fw.close()

    by_round = {r[0]: r for r in seen}
    # Epochs from the gateway's schedule: three rounds each.
    assert [r[1] for r in seen] == [1, 1, 1, 2, 2]
    # The keys of round 1 serve rounds 2 and 3, the dropped client 4 included (a key-reuse round
    # never shares its secret, so a dropout does not end its epoch); epoch 2 and the classic round
    # bring new keys, for the reasons the keyring gives.
    assert [by_round[r][2] for r in (1, 2, 3, 4, 5)] == [{2: False, 4: False}, {2: True, 4: True},
                                                         {2: True, 4: True}, {2: False, 4: False},
                                                         {2: False, 4: False}]
    assert by_round[4][5] == {2: [4, "the gateway started a new epoch"], 4: [4, "the gateway started a new epoch"]}
    assert by_round[5][5][2] == [5, "a round without key reuse gets keys of its own"]
    # X25519: 2 key pairs + 3 share-encryption + 3 mask agreements + 1 session key in the first
    # round of the keys; none in the later rounds of the epoch.
    assert by_round[1][4] == {2: 9, 4: 9}
    assert by_round[2][4] == {2: 9, 4: 9} and by_round[3][4] == {2: 9, 4: 9}
    # Ed25519 per round: the first round of the keys verifies ROUND_CONFIG and the 3 roster
    # entries; later rounds verify ROUND_CONFIG only and sign ADVERTISE_KEYS only.
    first, later = by_round[1][3][2], by_round[3][3][2]
    assert (first["ed25519_verify"], first["ed25519_sign"]) == (4, 1)
    assert (later["ed25519_verify"], later["ed25519_sign"]) == (1, 1)
    assert later["consistency_tags"] == 6 and later["session_tags"] == 8
    # The client that dropped in round 2 stopped after ShareKeys: two frames in, two out.
    assert by_round[2][3][4]["session_tags"] == 2
    # The classic round: every frame signed, the consistency check by signatures.
    classic_work = by_round[5][3][2]
    assert classic_work["session_tags"] == 0 and classic_work["consistency_tags"] == 0
    # ROUND_CONFIG, ROSTER, 3 entries, SHARES_RELAY, CONSISTENCY_REQUEST, UNMASK_REQUEST, 4 survivors
    assert classic_work["ed25519_verify"] == 1 + 1 + 3 + 1 + 1 + 1 + 4 and classic_work["ed25519_sign"] == 6
