"""A Sybil gateway: it announces a victim together with identities whose keys it generated itself.

Were those keys taken as announced, the gateway would receive t shares of the victim's self-mask
seed and know every pairwise mask (it holds the Sybils' secrets): it would unmask the victim's
input exactly, with no colluding agent. With certified identities the victim refuses before it
deals any share:

* on the wire: the real gateway, made malicious (it checks nothing and seats two Sybils, certified
  by a CA of its own, next to each victim), a real mosquitto, a provisioned CPython agent daemon
  (`ztfl agent`) and a provisioned ESP32 agent (the firmware in the MicroPython unix port). Both
  refuse the announcement (certificate_issuer); nothing they publish holds a key, a share or a
  masked input, so nothing the gateway saw can give their input back;
* in one process: Sybil certificates forged to name the trust anchor as issuer (signed by the
  gateway) pass the announcement's cheap checks; the victim refuses as soon as it would first
  use a Sybil's key, at the roster, before its shares are dealt (certificate_signature).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import pytest
import torch
import yaml
from nacl.signing import SigningKey

from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.secagg import AgentAggregation
from ztfl.agent.trust import seat
from ztfl.attestation.provision import Device, Fleet, bundle_trust, provision
from ztfl.fednet.messages import CERTIFIED_ANNOUNCE, Hello, RoundAnnounce, RoundKeying, certificate_text
from ztfl.firmware_tools.micropython_host import firmware_device_config, firmware_trust_of, start_firmware_agent
from ztfl.firmware_tools.records import partition_records, write_device_dir
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.registry import Registry
from ztfl.gateway.secagg import cohort_round_config
from ztfl.gateway.server import Gateway
from ztfl.hw_profiles import load_profile
from ztfl.protocol import certs, wire
from ztfl.protocol.config import minimum_threshold
from ztfl.protocol.server import ServerSession

FED, GW = "plant", "fog1"
VICTIMS = {"pi-0": "raspberry-pi-4", "esp-1": "esp32"}


class SybilGateway(Gateway):
    """The real gateway, malicious: it checks no certificate and, once both victims hold the
    model, seats each of them with two Sybils of its own making (always online)."""

    def __init__(self, config, sybils: list[tuple[Hello, bytes]]):
        super().__init__(config)
        self.sybils = sybils

    def _eligible(self) -> list:
        for hello, pk in self.sybils:
            self.agents.hello(hello, pk)
        victims = [i for i in self.agents.online() if i.hello.agent_id in VICTIMS and i.model_version >= 0]
        if len(victims) < len(VICTIMS):
            return []
        return victims + [self.agents.agents[h.agent_id] for h, _ in self.sybils]


def sybils_for(profile: str, names: list[str], root: SigningKey) -> list[tuple[Hello, bytes]]:
    p = load_profile(profile)
    out = []
    for name in names:
        key = SigningKey.generate()                   # the gateway holds every Sybil's secret
        cert = certs.issue(root, federation=FED, device_id=name, role="agent", public_key=bytes(key.verify_key),
                           not_before=0, not_after=certs.MAX_U32, serial=1)
        out.append((Hello(name, profile, p.model_variant, p.mask_bits, p.runtime, 500, p.attestation,
                          bytes(key.verify_key).hex(), certificate_text(cert.encode())), bytes(key.verify_key)))
    return out


def small_dataset(datasets_dir, tmp_path):
    path = tmp_path / "nsl_kdd_small.txt"
    with open(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt", encoding="utf-8") as f:
        path.write_text("".join(line for _, line in zip(range(3000), f)))
    return path


def test_sybil_gateway_learns_nothing_from_a_cpython_agent_or_a_board(mosquitto, datasets_dir, tmp_path):
    fleet = tmp_path / "fleet"
    provision(Fleet(FED, GW, [Device(a, p) for a, p in VICTIMS.items()]), fleet)
    data = {"path": str(small_dataset(datasets_dir, tmp_path)), "fmt": "nsl-kdd", "count": 2, "alpha": 0.5,
            "seed": 7}
    sybil_root = SigningKey.generate()
    gateway = SybilGateway(GatewayConfig.from_dict({
        "federation": FED, "gateway": GW, "broker": {"url": mosquitto.url}, "state_dir": str(tmp_path / "gw"),
        "data": data, "rounds": 1, "min_agents": 1, "min_cohort": 3, "heartbeat_s": 1.0, "max_attempts": 1,
        "trust": bundle_trust(fleet),            # a genuine gateway certificate: the gateway is the attacker
        "deadlines_s": {"advertise": 4, "share": 4, "masked": 4, "consistency": 4, "unmask": 4}}),
        sybils_for("raspberry-pi-4", ["pi-7", "pi-8"], sybil_root) + sybils_for("esp32", ["esp-7", "esp-8"],
                                                                                  sybil_root))
    seen: list[tuple[str, bytes]] = []
    ready = threading.Event()
    spy = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="what-the-gateway-sees")
    spy.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe(f"ztfl/{FED}/{GW}/agents/#", 1), ready.set())
    spy.on_message = lambda cl, u, m: seen.append((m.topic, bytes(m.payload)))
    spy.connect("127.0.0.1", mosquitto.port)
    spy.loop_start()
    assert ready.wait(5)

    agent_cfg = yaml.safe_load((fleet / "devices" / "pi-0" / "agent.yaml").read_text())
    agent_cfg.update(broker={"url": mosquitto.url}, state_dir=str(tmp_path / "pi-0"), data={**data, "index": 0},
                     heartbeat_s=1.0, train_epochs=1, max_batches=1)
    (tmp_path / "pi-0.yaml").write_text(yaml.safe_dump(agent_cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "ztfl.cli", "agent", "--config", str(tmp_path / "pi-0.yaml")],
                              stdout=open(tmp_path / "pi-0.log", "wb"), stderr=subprocess.STDOUT, env=env)]
    records, classes = partition_records({**data, "index": 1})
    seed = (fleet / "devices" / "esp-1" / "device-key.bin").read_bytes()
    board = firmware_device_config("esp-1", FED, GW, "127.0.0.1", mosquitto.port, classes, seed,
                                   bytes(SigningKey(seed).verify_key), max_samples=16,
                                   trust=firmware_trust_of(fleet, "esp-1"))
    procs.append(start_firmware_agent(write_device_dir(tmp_path / "esp-1", board, records), tmp_path / "esp-1.log"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gateway.start()
        deadline = time.monotonic() + 180
        while not gateway.done and time.monotonic() < deadline:
            gateway.step()
            assert all(p.poll() is None for p in procs), "a victim exited"
        time.sleep(1.0)
    finally:
        torch.set_num_threads(threads)
        gateway.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
        spy.loop_stop()
        spy.disconnect()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in VICTIMS}
    assert gateway.done, logs
    reg = Registry(tmp_path / "gw")
    rounds = reg.rounds()
    reg.close()
    # The round was announced with the Sybils (and failed: nobody took part).
    assert [(r["round"], r["status"]) for r in rounds] == [(1, "aborted")]
    assert set(rounds[0]["cohorts"]) == {"cnn-lstm-64", "micro-32"}
    assert "(certificate_issuer)" in logs["pi-0"], logs["pi-0"][-3000:]
    assert "round 1.0 refused (certificate_issuer)" in logs["esp-1"], logs["esp-1"][-3000:]
    # What the gateway saw of its victims: announcements of themselves and their liveness, no
    # advertised key, no share, no masked input (and alerts of the CPython agent's detection).
    for victim in VICTIMS:
        kinds = {t.rsplit("/", 1)[1] for t, _ in seen if t.split("/")[4] == victim}
        assert "hello" in kinds and kinds <= {"hello", "heartbeat", "alerts"}, (victim, kinds)


def test_forged_sybil_certificates_are_refused_at_first_use_before_any_share():
    root, attacker = SigningKey.generate(), SigningKey.generate()
    store = certs.TrustStore(bytes(root.verify_key), FED)
    keys = {sid: SigningKey.generate() for sid in range(1, 7)}         # 1: the victim; 2-6: Sybils
    gw_key = SigningKey.generate()

    def cert(device_id, role, key, serial, signer):
        c = certs.Certificate(FED, device_id, role, bytes(key.verify_key), 0, certs.MAX_U32, serial,
                              certs.key_id(bytes(root.verify_key)))      # names the anchor as issuer
        return certs.Certificate(**{**c.__dict__, "signature": signer.sign(c.signed_bytes()).signature}).encode()

    names = {sid: f"a-{sid}" for sid in keys}
    ann = RoundAnnounce(1, 0, "cnn-lstm-32", "cnn-lstm", 32, 0, "00" * 32,
                        [[names[s], s, certificate_text(cert(names[s], "agent", k, s, root if s == 1 else attacker))]
                         for s, k in keys.items()], 5, "00" * 32, {}, 1, "",
                        version=CERTIFIED_ANNOUNCE, server_cert=certificate_text(cert(GW, "gateway", gw_key, 9, root)))
    victim_seat = seat(store, ann, GW, "a-1", bytes(keys[1].verify_key), int(time.time()))
    assert store.signature_checks == 1               # only the gateway's so far: the Sybils' come at first use
    keying = RoundKeying(16, 1, False)
    config = cohort_round_config(32, 50, minimum_threshold(len(keys)), len(keys))
    server = ServerSession(config, gw_key, {s: k.verify_key for s, k in keys.items()}, keying.epoch, 1)
    clients = {s: AgentAggregation(s, k, bytes(gw_key.verify_key), victim_seat.peers, 1,
                                   AgentKeyrings().keys_for("c", keying, 1.0),
                                   check_peer=victim_seat.checker(store) if s == 1 else None)
               for s, k in keys.items()}
    sent_by_victim: list[int] = []
    frames = {s: server.round_config() for s in clients}
    with pytest.raises(certs.BadCertificateSignature) as refused:
        for _ in range(4):
            for sid, frame in frames.items():
                agg = clients[sid]
                replies = agg.receive(frame)
                if agg.wants_input:
                    replies += agg.provide_input(np.zeros(50, dtype=np.float32), 1)
                for _, reply in replies:
                    if sid == 1:
                        sent_by_victim.append(wire.peek(reply).type)
                    server.receive(reply)
            out = server.close_stage()
            frames = {s: out.frame_for(s) for s in clients if out.frame_for(s) is not None}
    assert refused.value.reason == "certificate_signature"
    # The victim advertised its public keys, nothing more: no share of anything was dealt.
    assert wire.SHARE_KEYS not in sent_by_victim and wire.MASKED_INPUT not in sent_by_victim
    assert sent_by_victim and set(sent_by_victim) <= {wire.ADVERTISE_KEYS, wire.GRAPH_REVEAL}
