# Checks the firmware against the protocol's tests/vectors/*.json, inside MicroPython.
# Reads {"<name>.json": <parsed content>, ...} on stdin; prints one JSON line:
# {"checks": {"<file>": count}, "failures": ["<file>: <what>", ...], "cpython_only": {"<file>: <what>":
# why the firmware is not held to it}}. Not part of the bundle.
import json
import struct
import sys
from array import array
from binascii import hexlify, unhexlify

from ztfw import ed25519, graph, secagg_keys as kdf, shamir, x25519, xchacha
from ztfw import secagg_wire as wire
from ztfw.aes_ctr import AesCtr
from ztfw.masking import MaskedStream, quantize
from ztfw.secagg_errors import BadSignature, MalformedMessage, ProtocolError

checks = {}
failures = []
cpython_only = {}       # "<file>: <what>" -> why the firmware is not held to it
current = [""]


def check(ok, what):
    checks[current[0]] = checks.get(current[0], 0) + 1
    if not ok:
        failures.append("%s: %s" % (current[0], what))


def h(b):
    return hexlify(b).decode()


def u(s):
    return unhexlify(s)


def words_of(values, weight, frac, clip, bits, plus=(), minus=(), chunk=5):
    vals = array("f", values)

    def src(start, n, out):
        for i in range(n):
            out[i] = vals[start + i]

    m = MaskedStream(len(values), bits, frac, clip, weight, src, plus, minus, chunk)
    raw = b"".join(bytes(c) for c in m.chunks())
    return list(struct.unpack("<%d%s" % (len(raw) // (bits // 8), "I" if bits == 32 else "Q"), raw))


def kdf_file(d):
    for c in d["hkdf_sha256_zero_salt"]:
        check(h(kdf.hkdf(u(c["ikm"]), u(c["info"]), c["length"])) == c["okm"], "hkdf %s" % c["info"][:16])
    for c in d["x25519"]:
        check(h(x25519.public_key(u(c["sk_a"]))) == c["pk_a"], "x25519 pk_a")
        check(h(x25519.public_key(u(c["sk_b"]))) == c["pk_b"], "x25519 pk_b")
        check(h(kdf.agree(u(c["sk_a"]), u(c["pk_b"]))) == c["shared"], "x25519 shared a")
        check(h(kdf.agree(u(c["sk_b"]), u(c["pk_a"]))) == c["shared"], "x25519 shared b")
    v = d["derivation"]
    uu, vv, ep, rd = v["u"], v["v"], v["epoch"], v["round"]
    shared = kdf.agree(u(v["s_sk_u"]), u(v["s_pk_v"]))
    check(h(shared) == v["pairwise_shared"], "pairwise shared")
    ek = kdf.pairwise_epoch_key(shared, uu, vv, ep)
    check(h(ek) == v["pairwise_epoch_key"], "pairwise epoch key")
    check(h(kdf.pairwise_round_key(ek, rd)) == v["pairwise_mask_key"], "pairwise mask key")
    check(h(kdf.pairwise_mask_key(u(v["s_sk_u"]), u(v["s_pk_v"]), uu, vv, ep, rd)) == v["pairwise_mask_key"],
          "pairwise mask key (u side)")
    check(h(kdf.pairwise_mask_key(u(v["s_sk_v"]), u(v["s_pk_u"]), vv, uu, ep, rd)) == v["pairwise_mask_key"],
          "pairwise mask key (v side)")
    check(h(kdf.share_encryption_key(u(v["c_sk_u"]), u(v["c_pk_v"]), uu, vv, ep)) == v["share_encryption_key"],
          "share encryption key")
    check(h(kdf.self_mask_key(u(v["self_mask_seed"]), uu, ep, rd)) == v["self_mask_key"], "self mask key")


def prg_file(d):
    for c in d["aes128_ctr_masks"]:
        wb = c["mask_bits"] // 8
        ks = AesCtr(u(c["key"]), bytes(16)).read(c["nwords"] * wb)
        check(h(ks) == c["keystream"], "keystream %s" % c["key"][:8])
        got = list(struct.unpack("<%d%s" % (c["nwords"], "I" if wb == 4 else "Q"), ks))
        check(got == c["words"], "words %s" % c["key"][:8])
        # The same mask through the streaming path (zero update, weight word excluded).
        plus = words_of([0.0] * (c["nwords"] - 1), 1, 0, 1, c["mask_bits"], plus=[u(c["key"])])
        mod = (1 << c["mask_bits"]) - 1
        check(plus[:-1] == c["words"][:-1] and plus[-1] == (c["words"][-1] + 1) & mod, "streamed mask")


def shamir_file(d):
    check(int(d["prime"]) == shamir.PRIME, "prime")
    check(h(shamir.PRIME.to_bytes(33, "little")) == d["prime_hex_le"], "prime encoding")
    for c in d["sharing"]:
        coeffs = [shamir.decode_y(u(x)) for x in c["coefficients"]]
        xs = [s["x"] for s in c["shares"]]
        shares = shamir.split_with_coefficients(u(c["secret"]), coeffs, xs)
        check([{"x": x, "y": h(shamir.encode_y(y))} for x, y in shares] == c["shares"], "split t=%d" % c["threshold"])
        subset = [(s["x"], shamir.decode_y(u(s["y"]))) for s in c["shares"] if s["x"] in c["reconstruct_from"]]
        check(h(shamir.reconstruct(subset, c["threshold"])) == c["reconstructed"], "reconstruct")
        try:
            shamir.reconstruct(subset[:-1], c["threshold"])
            check(False, "too few shares accepted")
        except shamir.ShamirError:
            check(True, "")


def fixedpoint_file(d):
    for c in d["encode"]:
        q = [quantize(x, c["frac_bits"], c["clip_q"]) for x in c["values"]]
        check(q == c["quantized"], "quantize f=%d" % c["frac_bits"])
        got = words_of(c["values"], c["weight"], c["frac_bits"], c["clip_q"], c["mask_bits"])
        check(got == c["words"], "encode %d-bit weight %d" % (c["mask_bits"], c["weight"]))


def masking_file(d):
    cfg = wire.RoundConfig(u(d["config"]))
    ep, rd = d["epoch"], d["round"]
    clients = d["clients"]
    total = [0] * (cfg.dim + 1)
    for c in clients:
        me = c["id"]
        got = words_of(c["input"], c["weight"], cfg.frac_bits, cfg.clip_q, 32)
        check(got == c["encoded"], "encoded client %d" % me)
        plus = [kdf.self_mask_key(u(c["self_mask_seed"]), me, ep, rd)]
        minus = []
        for o in clients:
            if o["id"] != me:
                key = kdf.pairwise_mask_key(u(c["s_sk"]), u(o["s_pk"]), me, o["id"], ep, rd)
                (plus if me < o["id"] else minus).append(key)
        masked = words_of(c["input"], c["weight"], cfg.frac_bits, cfg.clip_q, 32, plus, minus)
        check(masked == c["masked"], "masked client %d" % me)
        check(h(x25519.public_key(u(c["s_sk"]))) == c["s_pk"], "s_pk client %d" % me)
        for i in range(len(total)):
            total[i] = (total[i] + masked[i]) & 0xFFFFFFFF
    for c in clients:
        self_mask = words_of([0.0] * cfg.dim, 1, 0, 1, 32,
                             plus=[kdf.self_mask_key(u(c["self_mask_seed"]), c["id"], ep, rd)])
        for i in range(len(total)):
            # words_of added the weight word 1 to the last position: take it back out.
            total[i] = (total[i] - self_mask[i] + (1 if i == len(total) - 1 else 0)) & 0xFFFFFFFF
    check(total == d["sum_unmasked"], "sum of masked inputs minus self masks")


def graph_file(d):
    for c in d["harary"]:
        digest = u(c["roster_digest"])
        if c["permutation"] is not None:
            check(graph.permutation(c["ids"], digest) == c["permutation"], "permutation n=%d" % len(c["ids"]))
        for me in c["ids"]:
            got = graph.neighbours_of(me, c["ids"], c["neighbors"], digest)
            check(got == c["neighbours"][str(me)], "neighbours of %d (n=%d k=%d)" % (me, len(c["ids"]), c["neighbors"]))
    cr = d["commit_reveal"]
    reveals = [(int(k), u(v)) for k, v in cr["reveals"].items()]
    for cid, reveal in reveals:
        check(h(graph.commitment(cid, cr["epoch"], cr["round"], reveal)) == cr["commitments"][str(cid)],
              "commitment of %d" % cid)
    seed = graph.graph_seed(u(cr["roster_digest"]), reveals)
    check(h(seed) == cr["seed"], "graph seed from the reveals")
    check(graph.permutation(cr["ids"], seed) == cr["permutation"], "permutation from the graph seed")
    for me in cr["ids"]:
        check(graph.neighbours_of(me, cr["ids"], cr["neighbors"], seed) == cr["neighbours"][str(me)],
              "revealed graph: neighbours of %d" % me)


def wire_file(d):
    seeds = {int(k): u(v) for k, v in d["identity_seeds"].items()}
    public = {int(k): u(v) for k, v in d["identity_public"].items()}
    for k in seeds:
        check(ed25519.public_key(seeds[k]) == public[k], "identity key %d" % k)
    ep, rd = d["epoch"], d["round"]
    frames = {f["name"]: f for f in d["frames"]}
    for f in d["frames"]:
        raw = u(f["frame"])
        fr = wire.decode_frame(raw, 1 << 20)
        check((fr.mtype, fr.sender, fr.epoch, fr.round_id) == (f["type"], f["sender"], ep, rd), "header " + f["name"])
        check(h(fr.body) == f["body"] and h(fr.signed) == f["signed"], "body/signed " + f["name"])
        try:
            fr.verify(public[f["sender"]])
            check(True, "")
        except BadSignature:
            check(False, "signature " + f["name"])
        # Ed25519 is deterministic: re-signing the body with the sender's seed gives the same frame.
        check(wire.encode_frame(f["type"], f["sender"], ep, rd, fr.body, seeds[f["sender"]], public[f["sender"]]) == raw,
              "re-encoded " + f["name"])
        for bad, what in ((raw[:-1], "truncated"), (raw + b"\x00", "extended"),
                          (raw[:16] + struct.pack("<I", len(fr.body) + 1) + raw[20:], "length field")):
            try:
                wire.decode_frame(bad, 1 << 20)
                check(False, "%s %s frame accepted" % (what, f["name"]))
            except MalformedMessage:
                check(True, "")
        flipped = bytearray(raw)
        flipped[20 + len(fr.body) // 2] ^= 0x01
        try:
            wire.decode_frame(bytes(flipped), 1 << 20).verify(public[f["sender"]])
            check(False, "body bit flip in %s verified" % f["name"])
        except ProtocolError:
            check(True, "")
    # Server frames parse with the client's parsers.
    cfg = wire.RoundConfig(u(frames["round_config"]["body"]))
    check(h(cfg.digest) == d["config_digest"], "config digest")
    adv = u(frames["advertise_keys"]["body"])
    check(adv[:32] == cfg.digest, "advertise carries the config digest")
    roster = wire.parse_roster(u(frames["roster"]["body"]))
    reveals = [(int(k), u(v)) for k, v in d["graph_reveals"].items()]
    for cid, c_pk, s_pk, commitment, sig in roster:
        signed = wire.advertise_signed_bytes(cid, c_pk, s_pk, commitment, cfg.digest, ep, rd)
        try:
            ed25519.verify(public[cid], signed, sig)
            check(True, "")
        except ed25519.SignatureError:
            check(False, "roster entry %d signature" % cid)
        check(graph.commitment(cid, ep, rd, dict(reveals)[cid]) == commitment, "roster commitment of %d" % cid)
    check(roster[0][1:4] == (adv[32:64], adv[64:96], adv[96:128]), "roster holds client 1's keys and commitment")
    check(cfg.reveals_graph, "a sparse configuration reveals its graph")
    check(u(frames["graph_reveal"]["body"]) == dict(reveals)[1], "graph_reveal body")
    relayed = wire.parse_graph_seeds(u(frames["graph_seeds"]["body"]))
    check(relayed == sorted(reveals), "graph_seeds parse")
    check(h(graph.graph_seed(_sha256(u(frames["roster"]["body"])), relayed)) == d["graph_seed"], "graph seed")
    cts = []
    for c in d["share_encryption"]:
        ct = u(c["nonce"]) + xchacha.encrypt(u(c["key"]), u(c["nonce"]), u(c["plaintext"]), u(c["aad"]))
        check(h(ct) == c["ciphertext"], "share ciphertext to %d" % c["to"])
        check(h(xchacha.decrypt(u(c["key"]), ct[:24], ct[24:], u(c["aad"]))) == c["plaintext"], "share decrypt")
        check(wire.share_aad(ep, rd, c["from"], c["to"]) == u(c["aad"]), "share aad")
        cts.append((c["to"], ct))
    check(h(wire.share_keys_body(cts)) == frames["share_keys"]["body"], "share_keys body")
    relay = wire.parse_shares(u(frames["shares_relay"]["body"]), "SHARES_RELAY")
    check(relay == [(1, cts[0][1])], "shares_relay parse")
    for name, bits in (("masked_input", 32), ("masked_input_64", 64)):
        body = u(frames[name]["body"])
        count = struct.unpack_from("<I", body, 0)[0]
        check(wire.masked_input_prefix(count, bits) == body[:8], name + " prefix")
    survivors = wire.parse_consistency_request(u(frames["consistency_request"]["body"]))
    statement = wire.survivors_statement(cfg.digest, ep, rd, survivors)
    check(h(statement) == d["survivor_statement"], "survivor statement")
    check(h(ed25519.sign(seeds[1], statement)) == frames["consistency_signature"]["body"], "consistency signature")
    sigs, dropped = wire.parse_unmask_request(u(frames["unmask_request"]["body"]))
    check(dropped == [4] and [s for s, _ in sigs] == survivors, "unmask_request parse")
    for signer, sig in sigs:
        try:
            ed25519.verify(public[signer], statement, sig)
            check(True, "")
        except ed25519.SignatureError:
            check(False, "survivor signature of %d" % signer)
    smask = [(o, shamir.encode_y(o * 1000)) for o in survivors]
    skey = [(4, shamir.encode_y(shamir.PRIME - 1))]
    check(h(wire.unmask_shares_body(smask, skey)) == frames["unmask_shares"]["body"], "unmask_shares body")
    check(wire.parse_abort(u(frames["abort"]["body"])) == 1, "abort reason")


def epochs_file(d):
    """One key epoch over several rounds (docs/protocol.md 2.7): cached agreements, per-round
    keys, masking, dropouts unmasked with round keys, and the UNMASK_ROUND_KEYS frame."""
    from ztfw.secagg_keys import EpochKeys
    server_seed = u(d["server_identity_seed"])
    frame = u(d["round_config_frame"])
    fr = wire.decode_frame(frame, 1 << 16)
    try:
        fr.verify(ed25519.public_key(server_seed))
        check(True, "")
    except BadSignature:
        check(False, "round_config_frame signature")
    cfg = wire.RoundConfig(fr.body)
    check(h(cfg.body) == d["config"] and cfg.key_reuse, "key-reuse configuration")
    ep = d["epoch"]
    keyring = {}    # client -> EpochKeys, kept across rounds while its secret is unchanged
    round_pks = {}
    for rnd in d["rounds"]:
        rd = rnd["round"]
        clients = {c["id"]: c for c in rnd["clients"]}
        sk = {}
        for c in rnd["clients"]:
            sk[c["id"]] = u(c["s_sk"])
        pks = {}
        for cid in rnd["n2"]:
            # A dropped client is not listed: its keys are still those of the earlier round.
            if cid in sk and (cid not in keyring or keyring[cid].s_sk != sk[cid]):
                keyring[cid] = EpochKeys(ep, bytes(32), sk[cid])
            pks[cid] = keyring[cid].s_pk
        round_pks[rd] = pks
        for p in rnd["pairs"]:
            a, b = p["u"], p["v"]
            if a in keyring and b in pks:
                before = keyring[a].agreements
                ek = keyring[a].pairwise_epoch_key(a, b, pks[b])
                check(h(ek) == p["epoch_key"], "round %d epoch key %d-%d" % (rd, a, b))
                check(h(keyring[a].pairwise_mask_key(a, b, pks[b], rd)) == p["round_key"],
                      "round %d round key %d-%d" % (rd, a, b))
                if rd != d["rounds"][0]["round"] and str(b) not in rnd["s_sk_rekeyed"] \
                        and str(a) not in rnd["s_sk_rekeyed"]:
                    check(keyring[a].agreements == before, "round %d reused the %d-%d agreement" % (rd, a, b))
        total = [0] * (cfg.dim + 1)
        for cid in rnd["survivors"]:
            c = clients[cid]
            check(h(x25519.public_key(sk[cid])) == c["s_pk"], "round %d s_pk %d" % (rd, cid))
            skey = kdf.self_mask_key(u(c["self_mask_seed"]), cid, ep, rd)
            check(h(skey) == c["self_mask_key"], "round %d self-mask key %d" % (rd, cid))
            plus, minus = [skey], []
            for v in rnd["n2"]:
                if v != cid:
                    key = keyring[cid].pairwise_mask_key(cid, v, pks[v], rd)
                    (plus if cid < v else minus).append(key)
            got = words_of(c["input"], 1, cfg.frac_bits, cfg.clip_q, 32)
            check(got == c["encoded"], "round %d encoded %d" % (rd, cid))
            masked = words_of(c["input"], 1, cfg.frac_bits, cfg.clip_q, 32, plus, minus)
            check(masked == c["masked"], "round %d masked %d" % (rd, cid))
            for i in range(len(total)):
                total[i] = (total[i] + masked[i]) & 0xFFFFFFFF
        # The server's side: self masks off, and each dropped client's pairwise masks removed
        # with the round keys the survivors gave (never the dropped client's epoch secret).
        for cid in rnd["survivors"]:
            skey = kdf.self_mask_key(u(clients[cid]["self_mask_seed"]), cid, ep, rd)
            m = words_of([0.0] * cfg.dim, 1, 0, 1, 32, plus=[skey])
            for i in range(len(total)):
                total[i] = (total[i] - m[i] + (1 if i == cfg.dim else 0)) & 0xFFFFFFFF
        for dropped in rnd["dropped"]:
            for v in rnd["survivors"]:
                key = keyring[v].pairwise_mask_key(v, dropped, pks[dropped], rd)
                m = words_of([0.0] * cfg.dim, 1, 0, 1, 32, plus=[key])
                # v used +mask if v < dropped, -mask otherwise: take that back out.
                sign = -1 if v < dropped else 1
                for i in range(len(total)):
                    w = m[i] - (1 if i == cfg.dim else 0)
                    total[i] = (total[i] + sign * w) & 0xFFFFFFFF
        check(total == rnd["sum_unmasked"], "round %d unmasked sum" % rd)
    eg = d["epoch_graph"]
    seed = u(eg["seed"])
    for me in eg["members"]:
        mine = graph.neighbours_of(me, eg["members"], eg["neighbors"], seed)
        check(mine == eg["neighbours"][str(me)], "epoch graph neighbours of %d" % me)
        if me in eg["present"]:
            # A later round keeps the epoch's graph: the absent member is a dropout, not a new draw.
            check([v for v in mine if v in eg["present"]] == eg["present_neighbours"][str(me)],
                  "later round: neighbours of %d" % me)
    urk = d["unmask_round_keys"]
    rnd = [r for r in d["rounds"] if r["round"] == urk["round"]][0]
    sender = urk["sender"]
    rd = urk["round"]
    shares = []
    for cid in rnd["survivors"]:
        label = ("share-%d-%d" % (cid, rd)).encode()
        # fixed(label): SHA-256 chained from the label (protocol/vectors.py).
        y = int.from_bytes(_sha256(label), "little")
        shares.append((cid, shamir.encode_y(y)))
    keys = [(dd, keyring[sender].pairwise_mask_key(sender, dd, round_pks[rd][dd], rd)) for dd in rnd["dropped"]]
    body = wire.unmask_round_keys_body(shares, keys)
    check(h(body) == urk["body"], "UNMASK_ROUND_KEYS body")
    seed = u(urk["identity_seed"])
    out = wire.encode_frame(urk["type"], sender, ep, rd, body, seed, ed25519.public_key(seed))
    check(h(out) == urk["frame"], "UNMASK_ROUND_KEYS frame")
    check(urk["type"] == wire.UNMASK_ROUND_KEYS, "UNMASK_ROUND_KEYS type")


def _sha256(data):
    import hashlib
    return hashlib.sha256(data).digest()


class FixedStream:
    """The vectors' replayable randomness (protocol.vectors.FixedStream): a SHA-256 chain from
    a label, read front to back."""

    def __init__(self, label):
        self.block = label.encode()
        self.buffer = b""
        self.used = 0

    def __call__(self, n):
        while len(self.buffer) < n:
            self.block = _sha256(self.block)
            self.buffer += self.block
        out = self.buffer[:n]
        self.buffer = self.buffer[n:]
        self.used += n
        return out


def _replay(rv, entry, frames):
    """A fresh firmware session of one client of the session.json round, fed its first
    `frames` received frames; returns (session, [reply bytes or None])."""
    from ztfw.secagg_client import ClientSession, StreamedFrame
    from ztfw.secagg_keys import EpochKeys
    directory = {c["id"]: ed25519.public_key(u(c["identity_seed"])) for c in rv["clients"]}
    directory[0] = ed25519.public_key(u(rv["server_identity_seed"]))
    keys = EpochKeys(rv["epoch"], u(entry["c_sk"]), u(entry["s_sk"]))
    randbytes = FixedStream(entry["random_label"])
    session = ClientSession(entry["id"], u(entry["identity_seed"]), directory, keys, rv["round"],
                            randbytes=randbytes)
    session.set_input(array("f", entry["input"]), entry["weight"])
    replies = []
    for frame in entry["received"][:frames]:
        reply = session.receive(u(frame))
        if isinstance(reply, StreamedFrame):
            reply = reply.to_bytes()
        replies.append(reply)
    return session, replies, randbytes


def session_file(d):
    """Session-authenticated frames of key-reuse rounds (docs/protocol.md 1.8): the server key's
    Curve25519 form, session keys and tags, pairwise consistency tags, the two new messages,
    a complete key-reuse round replayed byte for byte, and every refusal with its error."""
    from ztfw import session_auth
    from ztfw.secagg_errors import ProtocolError, RoundAborted
    for c in d["curve25519_conversion"]:
        check(ed25519.public_key(u(c["ed25519_seed"])) == u(c["ed25519_pk"]), "conversion: identity key")
        curve = session_auth.ed25519_pk_to_x25519(u(c["ed25519_pk"]))
        check(h(curve) == c["curve25519_pk"], "conversion: curve25519 public key")
        check(h(x25519.public_key(u(c["curve25519_sk"]))) == c["curve25519_pk"], "conversion: curve25519 secret key")
    for c in d["curve25519_refused"]:
        try:
            session_auth.ed25519_pk_to_x25519(u(c["ed25519_pk"]))
            check(False, "conversion of %s accepted" % c["ed25519_pk"][:16])
        except ProtocolError as e:
            check(type(e).__name__ == c["error"], "conversion refused with %s" % type(e).__name__)
    sk = d["session_key"]
    c_pk = x25519.public_key(u(sk["c_sk"]))
    check(h(c_pk) == sk["c_pk"], "session key: c_pk")
    check(h(kdf.agree(u(sk["c_sk"]), u(sk["server_curve25519_pk"]))) == sk["shared"], "session key: shared")
    check(session_auth.INFO_SESSION + struct.pack("<HI", sk["client"], sk["epoch"]) + c_pk == u(sk["info"]),
          "session key: info")
    server_pk = ed25519.public_key(u(d["round"]["server_identity_seed"]))
    check(session_auth.ed25519_pk_to_x25519(server_pk) == u(sk["server_curve25519_pk"]), "session key: server")
    akey = session_auth.session_key(u(sk["c_sk"]), c_pk, server_pk, sk["client"], sk["epoch"])
    check(h(akey) == sk["akey"], "session key: akey")
    ct = d["client_tag"]
    head = u(ct["header"])
    check(h(head + _sha256(u(ct["body"]))) == ct["signed"], "client tag: signed bytes")
    check(h(session_auth.frame_tag(u(ct["akey"]), head, _sha256(u(ct["body"])))) == ct["tag"], "client tag")
    ep, rd = struct.unpack_from("<II", head, 8)
    frame = wire.encode_tagged_frame(ct["type"], ct["client"], ep, rd, u(ct["body"]), u(ct["akey"]))
    check(h(frame) == ct["frame"], "client tag: frame")
    fr = wire.decode_frame(frame, 1 << 16)
    check(fr.auth == wire.AUTH_SESSION and fr.tags == [(ct["client"], u(ct["tag"]))], "client tag: decoded")
    st = d["server_tags"]
    fr = wire.decode_frame(u(st["frame"]), 1 << 16, len(st["recipients"]))
    check(h(fr.signed) == st["signed"] and h(fr.body) == st["body"], "server tags: signed bytes")
    trailer = struct.pack("<H", len(st["recipients"]))
    for r in st["recipients"]:
        tag = session_auth.frame_tag(u(r["akey"]), fr.signed[:20], fr.signed[20:])
        check(h(tag) == r["tag"], "server tags: tag for %d" % r["id"])
        trailer += struct.pack("<H", r["id"]) + tag
        try:
            fr.check_tag(u(r["akey"]), r["id"])
            check(True, "")
        except ProtocolError as e:
            check(False, "server tags: %d refused: %s" % (r["id"], e))
    check(h(trailer) == st["trailer"] and u(st["frame"]).endswith(trailer), "server tags: trailer")
    try:
        wire.decode_frame(u(st["frame"]), 1 << 16, len(st["recipients"]) - 1)
        check(False, "server tags: more recipients than allowed accepted")
    except MalformedMessage:
        check(True, "")
    pc = d["pairwise_consistency"]
    shared = kdf.agree(u(pc["s_sk_u"]), u(pc["s_pk_v"]))
    ekey = kdf.pairwise_epoch_key(shared, pc["u"], pc["v"], pc["epoch"])
    check(h(ekey) == pc["epoch_key"], "pairwise consistency: epoch key")
    vkey = session_auth.consistency_key(ekey, pc["round"])
    check(h(vkey) == pc["vkey"], "pairwise consistency: vkey")
    check(session_auth.INFO_CONSISTENCY + struct.pack("<I", pc["round"]) == u(pc["info"]), "pairwise consistency: info")
    statement = u(pc["statement"])
    check(h(session_auth.consistency_tag(vkey, pc["u"], statement)) == pc["tag_u_to_v"], "tag u->v")
    check(h(session_auth.consistency_tag(vkey, pc["v"], statement)) == pc["tag_v_to_u"], "tag v->u")
    for m in d["messages"]:
        fr = wire.decode_frame(u(m["frame"]), 1 << 16)
        check(fr.mtype == m["type"] and h(fr.body) == m["body"], "message %s: frame" % m["name"])
        if m["type"] == wire.CONSISTENCY_TAGS:
            count = struct.unpack_from("<H", fr.body, 0)[0]
            tags = [(struct.unpack_from("<H", fr.body, 4 + 18 * i)[0], fr.body[6 + 18 * i:22 + 18 * i])
                    for i in range(count)]
            check(h(wire.consistency_tags_body(tags)) == m["body"], "message %s: body" % m["name"])
        else:
            tags, dropped = wire.parse_unmask_request_tags(fr.body)
            rebuilt = struct.pack("<HH", len(tags), len(dropped)) + b"".join(
                struct.pack("<H", v) + t for v, t in tags) + struct.pack("<%dH" % len(dropped), *dropped)
            check(h(rebuilt) == m["body"], "message %s: body" % m["name"])
    rv = d["round"]
    check(wire.RoundConfig(u(rv["config"])).key_reuse, "round: key-reuse configuration")
    for entry in rv["clients"]:
        session, replies, randbytes = _replay(rv, entry, len(entry["received"]))
        cid = entry["id"]
        for i, (got, want) in enumerate(zip(replies, entry["replies"])):
            check((h(got) if got is not None else None) == want, "round: client %d reply %d" % (cid, i))
        check(len(replies) == len(entry["replies"]), "round: client %d reply count" % cid)
        check(session.stage == entry["final_stage"], "round: client %d stage %s" % (cid, session.stage))
        check(randbytes.used == entry["random_bytes_used"], "round: client %d random bytes" % cid)
        check(sorted(session._state.neighbours) == entry["neighbours"], "round: client %d neighbours" % cid)
    for case in d["refusals"]:
        entry = [c for c in rv["clients"] if c["id"] == case["client"]][0]
        session, _, _ = _replay(rv, entry, case["after"])
        stage = session.stage
        try:
            session.receive(u(case["frame"]))
            check(False, "refusal %s: accepted" % case["name"])
        except ProtocolError as e:
            check(type(e).__name__ == case["error"], "refusal %s: %s (%s), expected %s"
                  % (case["name"], type(e).__name__, e, case["error"]))
            if isinstance(e, RoundAborted):
                check(session.stage == "Aborted", "refusal %s: not final" % case["name"])
            else:
                check(session.stage == stage, "refusal %s: stage changed" % case["name"])


def certs_file(d):
    """Identity certificates and the revocation list (docs/wire.md): decoded field by field,
    the signed list adopted, every malformed certificate and failed check refused with the reason
    code of the CPython class of that name."""
    from ztfw import certs
    check(h(certs.key_id(u(d["root_public"]))) == d["root_key_id"], "root key id")
    for c in d["certificates"]:
        cert = certs.decode(u(c["encoded"]))
        got = (cert.role, cert.device_id, cert.serial, cert.not_before, cert.not_after, h(cert.public_key))
        want = (c["role"], c["device_id"], c["serial"], c["not_before"], c["not_after"], c["public_key"])
        check(got == want and cert.federation == d["federation"] and h(cert.raw) == c["encoded"],
              "certificate of %s decoded" % c["device_id"])
    rv = d["revocations"]
    rl = certs.RevocationList(u(rv["encoded"]))
    check((rl.number, rl.issued_at, rl.next_update, sorted(rl.revoked)) ==
          (rv["number"], rv["issued_at"], rv["next_update"], rv["revoked"]), "revocation list decoded")
    store = certs.TrustStore(u(d["root_public"]), d["federation"])
    check(store.accept_revocations(u(rv["signed"]), d["now"]) is True, "signed revocation list adopted")
    for c in d["malformed"]:
        check(_cert_reason(lambda: certs.decode(u(c["bytes"]))) == c["error"], "malformed %s" % c["name"])
    for c in d["checks"]:
        reason = _cert_reason(lambda: store.check(certs.decode(u(c["certificate"])), c["role"], c["device_id"],
                                                  c["now"]))
        check(reason == c["error"], "check %s: %r, expected %r" % (c["name"], reason, c["error"]))


def _cert_reason(fn):
    """The reason code a certificate operation is refused with; "" if it passes."""
    from ztfw import certs
    try:
        fn()
    except certs.CertError as e:
        return e.reason
    return ""


# What dp.json holds that the firmware cannot be held to, and why: the board adds no DP noise, so
# it refuses every round configuration that signs a DP record before reading the record.
NO_DP_RECORD = "the firmware never reads a DP record: it refuses a DP round before decoding it"


def dp_file(d):
    """ROUND_CONFIG with a signed DP record (docs/protocol.md 1.6): the firmware takes the round
    without DP, checks the signed frame, and refuses every DP body (the record's own checks and
    their error classes are the CPython decoder's: listed in `cpython_only`)."""
    from ztfw.agent_wire import config_signs_dp
    from ztfw.secagg_client import ClientSession
    from ztfw.secagg_keys import EpochKeys
    plain = wire.RoundConfig(u(d["plain_body"]))
    check(h(plain.digest) == d["plain_digest"], "digest of the configuration without DP")
    raw = u(d["frame"])
    fr = wire.decode_frame(raw, 1 << 16)
    check(fr.mtype == wire.ROUND_CONFIG and fr.sender == wire.SERVER_ID and h(fr.body) == d["dp_body"],
          "signed DP frame: header and body")
    try:
        fr.verify(u(d["server_public"]))
        check(True, "")
    except BadSignature:
        check(False, "signed DP frame: signature")
    check(config_signs_dp(raw) and not config_signs_dp(raw[:20] + u(d["plain_body"])), "DP flag spotted")
    # A board's session handed the genuine DP frame refuses it, answers nothing and stays put.
    seed = bytes(range(32))
    directory = {wire.SERVER_ID: u(d["server_public"]), 1: ed25519.public_key(seed)}
    session = ClientSession(1, seed, directory, EpochKeys(fr.epoch, bytes(32), bytes(32)), fr.round_id)
    session.set_input(array("f", [0.0] * plain.dim))
    try:
        session.receive(raw)
        check(False, "signed DP frame accepted by a session")
    except ProtocolError:
        check(session.stage == "AdvertiseKeys", "signed DP frame: session stage changed")
    _refused(u(d["dp_body"]), "MalformedMessage", "the DP body")
    cpython_only["dp.json: dp_record, dp_digest"] = NO_DP_RECORD
    for c in d["refused"]:
        _refused(u(c["body"]), c["error"], "refused %s" % c["case"])
        if c["error"] != "MalformedMessage":
            # Refused here too, as malformed: the record whose value is wrong is never read.
            cpython_only["dp.json: refused %s as %s" % (c["case"], c["error"])] = NO_DP_RECORD


def _refused(body, error, what):
    """The firmware's decoder refuses `body`; with `error` MalformedMessage, as that class."""
    try:
        wire.RoundConfig(body)
        check(False, "%s accepted" % what)
    except ProtocolError as e:
        check(error != "MalformedMessage" or isinstance(e, MalformedMessage),
              "%s: %s, expected %s" % (what, type(e).__name__, error))


FILES = {"kdf.json": kdf_file, "prg.json": prg_file, "shamir.json": shamir_file,
         "fixedpoint.json": fixedpoint_file, "masking.json": masking_file, "graph.json": graph_file,
         "wire.json": wire_file, "epochs.json": epochs_file, "session.json": session_file,
         "certs.json": certs_file, "dp.json": dp_file}

vectors = json.loads(sys.stdin.read())
for name in sorted(vectors):
    current[0] = name
    if name not in FILES:
        failures.append("%s: no firmware check for this vector file" % name)
        continue
    if vectors[name].get("version") != wire.VERSION:
        failures.append("%s: vector version %r" % (name, vectors[name].get("version")))
    try:
        FILES[name](vectors[name])
    except Exception as e:
        failures.append("%s: %s: %s" % (name, type(e).__name__, e))
print(json.dumps({"checks": checks, "failures": failures, "cpython_only": cpython_only}))
