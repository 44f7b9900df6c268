"""The SHA-512 compression function (FIPS 180-4) compiled by the viper emitter.

Pure-Python SHA-512 works on 64-bit integers, which are heap-allocated big integers on a 32-bit
board (and above 2^62 on a 64-bit one): every Ed25519 signature and verification hashes 2-3
blocks. Here each 64-bit word is a (high, low) pair of 32-bit words, so the same code runs on
32- and 64-bit ports: values are read from a ptr32 as `uint` (right shifts are logical on every
port), a store to a ptr32 cuts a value to 32 bits, and a carry out of the low word is
`sum < addend` (unsigned). Right shifts only ever see values read back from a ptr32; left
shifts may leave bits above 32 on a 64-bit port, which only the bitwise combinations and the
final store see. No `~`: this viper emitter's unary invert overwrites its operand, so
ch(e, f, g) is computed as g ^ (e & (f ^ g)). Each 64-bit addition is written out where it is
needed: a viper function returns one object, not a (high, low) pair, and a call per addition
would cost more than the arithmetic it wraps.

Kept as source in the bundle: the board compiles it to native code at import.
"""
import micropython


@micropython.viper
def compress(state, block, w, k):
    """state: array('I') of 16 words (h0 high, h0 low, ...), updated in place; block: 128
    bytes; w: array('I') of 162 words (scratch); k: array('I') of the 160 round-constant words."""
    S = ptr32(state)
    B = ptr8(block)
    W = ptr32(w)
    K = ptr32(k)
    i = 0
    t = 0
    n = uint(0)
    rh = uint(0)
    while i < 32:
        j = i * 4
        W[i] = (uint(B[j]) << 24) | (uint(B[j + 1]) << 16) | (uint(B[j + 2]) << 8) | uint(B[j + 3])
        i += 1
    t = 16
    while t < 80:
        # s0 = rotr(x, 1) ^ rotr(x, 8) ^ (x >> 7), x = W[t - 15]
        xh = uint(W[2 * t - 30])
        xl = uint(W[2 * t - 29])
        W[160] = ((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)
        W[161] = ((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))
        sh = uint(W[160])
        sl = uint(W[161])
        # W[t] = W[t - 16] + s0
        rh = uint(W[2 * t - 32])
        rl = uint(W[2 * t - 31])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + sh
        if uint(n) < uint(sl):
            rh += 1
        rl = n
        # + W[t - 7]
        sh = uint(W[2 * t - 14])
        sl = uint(W[2 * t - 13])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + sh
        if uint(n) < uint(sl):
            rh += 1
        rl = n
        # + s1, s1 = rotr(x, 19) ^ rotr(x, 61) ^ (x >> 6), x = W[t - 2]
        xh = uint(W[2 * t - 4])
        xl = uint(W[2 * t - 3])
        W[160] = ((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)
        W[161] = ((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))
        sh = uint(W[160])
        sl = uint(W[161])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + sh
        if uint(n) < uint(sl):
            rh += 1
        W[2 * t] = rh
        W[2 * t + 1] = n
        t += 1
    ah = uint(S[0])
    al = uint(S[1])
    bh = uint(S[2])
    bl = uint(S[3])
    ch = uint(S[4])
    cl = uint(S[5])
    dh = uint(S[6])
    dl = uint(S[7])
    eh = uint(S[8])
    el = uint(S[9])
    fh = uint(S[10])
    fl = uint(S[11])
    gh = uint(S[12])
    gl = uint(S[13])
    hh = uint(S[14])
    hl = uint(S[15])
    t = 0
    while t < 80:
        # t1 = h + S1(e) + ch(e, f, g) + K[t] + W[t]
        W[160] = ((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23))
        W[161] = ((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))
        sh = uint(W[160])
        sl = uint(W[161])
        W[160] = hl + sl
        n = uint(W[160])
        rh = hh + sh
        if uint(n) < uint(sl):
            rh += 1
        rl = n
        W[161] = gl ^ (el & (fl ^ gl))
        sl = uint(W[161])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + (gh ^ (eh & (fh ^ gh)))
        if uint(n) < uint(sl):
            rh += 1
        rl = n
        sl = uint(K[2 * t + 1])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + uint(K[2 * t])
        if uint(n) < uint(sl):
            rh += 1
        rl = n
        sl = uint(W[2 * t + 1])
        W[160] = rl + sl
        n = uint(W[160])
        rh = rh + uint(W[2 * t])
        if uint(n) < uint(sl):
            rh += 1
        W[160] = rh
        t1h = uint(W[160])
        t1l = n
        # t2 = S0(a) + maj(a, b, c)
        W[160] = ((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25))
        W[161] = ((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))
        sh = uint(W[160])
        sl = uint(W[161])
        ml = (al & bl) ^ (al & cl) ^ (bl & cl)
        W[160] = ml + sl
        n = uint(W[160])
        rh = sh + ((ah & bh) ^ (ah & ch) ^ (bh & ch))
        if uint(n) < uint(sl):
            rh += 1
        t2l = n
        W[160] = rh
        t2h = uint(W[160])
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        # e = d + t1
        W[160] = dl + t1l
        n = uint(W[160])
        rh = dh + t1h
        if uint(n) < uint(t1l):
            rh += 1
        W[160] = rh
        eh = uint(W[160])
        el = n
        dh = ch
        dl = cl
        ch = bh
        cl = bl
        bh = ah
        bl = al
        # a = t1 + t2
        W[160] = t1l + t2l
        n = uint(W[160])
        rh = t1h + t2h
        if uint(n) < uint(t2l):
            rh += 1
        W[160] = rh
        ah = uint(W[160])
        al = n
        t += 1
    # state += working variables
    W[0] = ah
    W[1] = al
    W[2] = bh
    W[3] = bl
    W[4] = ch
    W[5] = cl
    W[6] = dh
    W[7] = dl
    W[8] = eh
    W[9] = el
    W[10] = fh
    W[11] = fl
    W[12] = gh
    W[13] = gl
    W[14] = hh
    W[15] = hl
    i = 0
    while i < 16:
        sl = uint(W[i + 1])
        W[160] = uint(S[i + 1]) + sl
        n = uint(W[160])
        rh = uint(S[i]) + uint(W[i])
        if uint(n) < uint(sl):
            rh += 1
        S[i] = rh
        S[i + 1] = n
        i += 2
