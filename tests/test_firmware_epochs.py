"""Key epochs on the firmware, in real MicroPython, across rounds run by the CPython server:
the keyring keeps the keys of a gateway epoch, later rounds run no X25519 and are authenticated
with session tags (one Ed25519 verification and one signature per round), a firmware client
that drops mid-round is unmasked with round keys and comes back with the same keys, a new epoch
and a classic round bring new keys; a sparse graph revealed in the epoch's first round is kept
by the board for the later ones; every aggregate is exact."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort, expected_sums
from ztfl.protocol.stages import Stage
from ztfl.firmware_tools.micropython_host import FirmwareClient
from protocol_testkit import drive

IDS = [1, 2, 3, 4, 5]
FIRMWARE = (2, 4)


def test_firmware_epoch_with_a_dropout_a_new_epoch_and_a_classic_round_is_exact():
    reuse = RoundConfig(dim=24, threshold=4, max_clients=5, mask_bits=32, max_weight=8, key_reuse=True)
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
            drive(server, clients, dropped)
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
    # X25519: 2 key pairs + 4 share-encryption + 4 mask agreements + 1 session key in the first
    # round of the keys; none in the later rounds of the epoch.
    assert by_round[1][4] == {2: 11, 4: 11}
    assert by_round[2][4] == {2: 11, 4: 11} and by_round[3][4] == {2: 11, 4: 11}
    # Ed25519 per round: the first round of the keys verifies ROUND_CONFIG and the 4 roster
    # entries; later rounds verify ROUND_CONFIG only and sign ADVERTISE_KEYS only.
    first, later = by_round[1][3][2], by_round[3][3][2]
    assert (first["ed25519_verify"], first["ed25519_sign"]) == (5, 1)
    assert (later["ed25519_verify"], later["ed25519_sign"]) == (1, 1)
    assert later["consistency_tags"] == 8 and later["session_tags"] == 8
    # The client that dropped in round 2 stopped after ShareKeys: two frames in, two out.
    assert by_round[2][3][4]["session_tags"] == 2
    # The classic round: every frame signed, the consistency check by signatures.
    classic_work = by_round[5][3][2]
    assert classic_work["session_tags"] == 0 and classic_work["consistency_tags"] == 0
    # ROUND_CONFIG, ROSTER, 4 entries, SHARES_RELAY, CONSISTENCY_REQUEST, UNMASK_REQUEST, 5 survivors
    assert classic_work["ed25519_verify"] == 1 + 1 + 4 + 1 + 1 + 1 + 5 and classic_work["ed25519_sign"] == 6


def test_firmware_keeps_the_epochs_revealed_graph_for_later_rounds():
    """7 clients, 4 neighbours: round 1 (new graph) commits, reveals and fixes the graph; round 2
    keeps it on every side, so the board runs no X25519 and no roster verification, and a key
    epoch whose graph the board never saw is refused with NoEpochGraph."""
    ids, fw_id = list(range(1, 8)), 3
    first = RoundConfig(dim=12, threshold=4, max_clients=7, mask_bits=32, neighbors=4, key_reuse=True,
                        new_graph=True)
    later = replace(first, new_graph=False)
    cohort = Cohort.create(ids)
    raw_directory = {k: bytes(v) for k, v in cohort.directory.items()}
    policy = EpochPolicy(max_rounds=3)
    keyrings = {c: ClientKeyring(policy) for c in ids if c != fw_id}
    graphs: dict = {}
    rng = np.random.default_rng(9)
    with FirmwareClient() as fw:
        fw.start_keyring(policy.max_rounds, policy.max_seconds)
        agreements = []
        for round_id, config in ((1, first), (2, later)):
            inputs = {c: rng.normal(0, 1, config.dim).astype(np.float32) for c in ids}
            clients = {}
            for c in ids:
                if c == fw_id:
                    fw.open_keyring_session(c, cohort.identities[c].encode(), raw_directory, 1, round_id, True,
                                            float(round_id))
                    fw.set_input(inputs[c], 1)
                    clients[c] = fw
                else:
                    clients[c] = ClientSession(c, cohort.identities[c], cohort.directory,
                                               keyrings[c].keys_for(1, round_id, float(round_id), True), round_id)
                    clients[c].set_input(inputs[c], 1)
            server = ServerSession(config, cohort.server_identity, cohort.directory, 1, round_id, epoch_graphs=graphs)
            drive(server, clients)
            expected, weight = expected_sums(config, inputs, {}, ids)
            assert server.result is not None and np.array_equal(server.result.sums, expected), server.abort_reason
            finished = fw.finish()
            agreements.append((finished["agreements"], finished["work"]["ed25519_verify"]))
            for c in keyrings:
                keyrings[c].finish(clients[c])
        assert server.config.reveals_graph is False and len(server.neighbours[fw_id]) == 4
        # Round 1: 2 pairs + 4 share-encryption + 4 mask agreements + the session key; round 2 none.
        assert agreements[0][0] == 11 and agreements[1][0] == 11
        assert agreements[1][1] == 1                  # ROUND_CONFIG only: entries and graph kept
        # A new epoch announced without a graph round: the board's new keys hold no graph.
        fw.open_keyring_session(fw_id, cohort.identities[fw_id].encode(), raw_directory, 2, 3, True, 3.0)
        graphs[2] = graphs[1]
        server = ServerSession(later, cohort.server_identity, cohort.directory, 2, 3, epoch_graphs=graphs)
        assert fw.receive(server.round_config()) == (None, "NoEpochGraph")
