"""The micro model on the device: integer-only int8 inference and float local training.

Inference follows the int8 scheme of docs/models.md (models/micro.py) exactly: all
integers, so it matches the host bit for bit. Weights are kept as array('b') and
biases as array('i'); the compact ZTMI form is parsed with every size checked
before anything is allocated.

Training runs on float weights in one flat array('f') laid out like the host's flat
vector (layers.0.weight row-major [out][in], layers.0.bias, layers.1.weight, ...), by
per-sample SGD on softmax cross-entropy: gradients are applied as they are computed,
so no second parameter-sized buffer exists.
"""
import array
import math
import struct

MAGIC = b"ZTMI"
FORMAT_VERSION = 1
MAX_PARAMS = 8192
MAX_LAYERS = 16
_LAYER_HEAD = struct.calcsize("<HHiB")


class MicroModelError(ValueError):
    pass


def quantise_input(x):
    """q_x = clamp(floor(x * 127 + 0.5), 0, 127) for an encoded row in [0, 1]."""
    out = bytearray(len(x))
    for i in range(len(x)):
        q = math.floor(x[i] * 127 + 0.5)
        out[i] = 0 if q < 0 else (127 if q > 127 else q)
    return out


class QuantLayer:
    def __init__(self, n_in, n_out, weight, bias, multiplier, shift, scale=0.0):
        self.n_in = n_in
        self.n_out = n_out
        self.weight = weight          # array('b'), row-major [out][in]
        self.bias = bias              # array('i')
        self.multiplier = multiplier  # 0 for the last layer
        self.shift = shift
        self.scale = scale            # s_in * s_w: acc * scale is the float pre-activation (0: unknown)


class QuantModel:
    def __init__(self, layers):
        if not layers:
            raise MicroModelError("model has no layers")
        for a, b in zip(layers, layers[1:]):
            if a.n_out != b.n_in:
                raise MicroModelError("layer sizes do not chain")
        self.layers = layers
        self.n_features = layers[0].n_in
        self.n_classes = layers[-1].n_out

    @classmethod
    def from_bytes(cls, buf, max_params=MAX_PARAMS):
        """Parse the compact form: MAGIC, u8 version, u16 n_layers, then per layer
        u16 n_in, u16 n_out, i32 multiplier, u8 shift, int8 weights, int32 biases."""
        n = len(buf)
        if n < 7 or bytes(buf[:4]) != MAGIC:
            raise MicroModelError("not a micro model (bad magic)")
        version, n_layers = struct.unpack_from("<BH", buf, 4)
        if version != FORMAT_VERSION:
            raise MicroModelError("unsupported micro model version %d" % version)
        if not 0 < n_layers <= MAX_LAYERS:
            raise MicroModelError("layer count %d out of range" % n_layers)
        pos = 7
        layers = []
        total = 0
        for i in range(n_layers):
            if pos + _LAYER_HEAD > n:
                raise MicroModelError("truncated layer header %d" % i)
            n_in, n_out, mult, shift = struct.unpack_from("<HHiB", buf, pos)
            pos += _LAYER_HEAD
            if n_in == 0 or n_out == 0:
                raise MicroModelError("empty layer %d" % i)
            total += n_in * n_out + n_out
            if total > max_params:
                raise MicroModelError("model exceeds %d parameters" % max_params)
            last = i == n_layers - 1
            if last and mult != 0:
                raise MicroModelError("last layer must not requantise")
            if not last and (mult <= 0 or not 0 < shift < 63):
                raise MicroModelError("hidden layer %d has invalid requantisation" % i)
            need = n_in * n_out + 4 * n_out
            if pos + need > n:
                raise MicroModelError("truncated weights of layer %d" % i)
            weight = array.array("b", bytes(buf[pos:pos + n_in * n_out]))
            pos += n_in * n_out
            bias = array.array("i", struct.unpack_from("<%di" % n_out, buf, pos))
            pos += 4 * n_out
            for w in weight:
                if w == -128:
                    raise MicroModelError("weight -128 outside the symmetric int8 range")
            layers.append(QuantLayer(n_in, n_out, weight, bias, mult, shift))
        if pos != n:
            raise MicroModelError("%d trailing bytes after the model" % (n - pos))
        return cls(layers)

    def to_bytes(self):
        out = bytearray(MAGIC)
        out.extend(struct.pack("<BH", FORMAT_VERSION, len(self.layers)))
        for layer in self.layers:
            out.extend(struct.pack("<HHiB", layer.n_in, layer.n_out, layer.multiplier, layer.shift))
            out.extend(bytes(layer.weight))
            out.extend(struct.pack("<%di" % layer.n_out, *layer.bias))
        return bytes(out)

    def logits(self, qx):
        """Last-layer integer accumulators for a quantised input row."""
        if len(qx) != self.n_features:
            raise MicroModelError("expected %d features, got %d" % (self.n_features, len(qx)))
        h = qx
        for layer in self.layers:
            w = layer.weight
            n_in = layer.n_in
            acc = []
            for j in range(layer.n_out):
                s = layer.bias[j]
                base = j * n_in
                for i in range(n_in):
                    s += w[base + i] * h[i]
                acc.append(s)
            if not layer.multiplier:
                return acc
            m = layer.multiplier
            shift = layer.shift
            half = 1 << (shift - 1)
            nxt = bytearray(layer.n_out)
            for j in range(layer.n_out):
                s = acc[j]
                if s < 0:
                    s = 0
                q = (s * m + half) >> shift
                nxt[j] = 127 if q > 127 else q
            h = nxt
        return acc

    def predict(self, qx):
        acc = self.logits(qx)
        best = 0
        for i in range(1, len(acc)):
            if acc[i] > acc[best]:
                best = i
        return best

    def classify(self, qx):
        """(class index, softmax probability) for one quantised row."""
        acc = self.logits(qx)
        best = 0
        for i in range(1, len(acc)):
            if acc[i] > acc[best]:
                best = i
        scale = self.layers[-1].scale
        if not scale:
            return best, 1.0
        total = 0.0
        for a in acc:
            total += math.exp((a - acc[best]) * scale)
        return best, 1.0 / total


def hidden_for(n_features, n_classes, max_params=MAX_PARAMS):
    """The micro model's hidden sizes (models.micro.MicroConfig.fitting)."""
    for hidden in ((32, 16), (24, 16), (16, 16), (16, 8), (8, 8), (8,), (4,)):
        if n_params([n_features] + list(hidden) + [n_classes]) <= max_params:
            return hidden
    raise MicroModelError("%d features x %d classes cannot fit %d parameters" % (n_features, n_classes, max_params))


def zero_floats(n, step=64):
    """array('f') of n zeros grown in small steps: array('f', bytes(4n)) would need the
    zero bytes and the array at once (twice the model in one moment); growing lets the
    allocator extend the block in place."""
    zeros = array.array("f", bytes(4 * step))
    out = array.array("f")
    while len(out) + step <= n:
        out.extend(zeros)
    if len(out) < n:
        out.extend(zeros[:n - len(out)])
    return out


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


class FloatMLP:
    """ReLU MLP over one flat array('f') of parameters (the host's flat order)."""

    def __init__(self, sizes, params=None):
        if len(sizes) < 2:
            raise MicroModelError("an MLP needs at least input and output sizes")
        count = n_params(sizes)
        if count > MAX_PARAMS:
            raise MicroModelError("MLP of %d parameters exceeds %d" % (count, MAX_PARAMS))
        self.sizes = tuple(sizes)
        if params is None:
            params = zero_floats(count)
        if len(params) != count:
            raise MicroModelError("expected %d parameters, got %d" % (count, len(params)))
        self.params = params
        self.offsets = []
        off = 0
        for a, b in zip(sizes, sizes[1:]):
            self.offsets.append((off, off + a * b))   # weight offset, bias offset
            off += a * b + b

    def init_random(self, seed_bytes):
        """He-uniform initial weights from a byte stream (os.urandom or a fixed seed), zero biases."""
        p = self.params
        k = 0
        for (w_off, b_off), (a, b) in zip(self.offsets, zip(self.sizes, self.sizes[1:])):
            bound = math.sqrt(6.0 / a)
            for i in range(a * b):
                r = seed_bytes[k % len(seed_bytes)] | (seed_bytes[(k + 1) % len(seed_bytes)] << 8)
                k += 2
                p[w_off + i] = (r / 65535.0 * 2 - 1) * bound
            for i in range(b):
                p[b_off + i] = 0.0

    def forward(self, x):
        """Activations of every layer: [x, h1, ..., logits] (hidden ones after ReLU)."""
        p = self.params
        acts = [x]
        h = x
        last = len(self.offsets) - 1
        for li, (w_off, b_off) in enumerate(self.offsets):
            n_in = self.sizes[li]
            n_out = self.sizes[li + 1]
            out = array.array("f", bytes(4 * n_out))
            for j in range(n_out):
                s = p[b_off + j]
                base = w_off + j * n_in
                for i in range(n_in):
                    s += p[base + i] * h[i]
                if li != last and s < 0:
                    s = 0.0
                out[j] = s
            acts.append(out)
            h = out
        return acts

    def predict(self, x):
        logits = self.forward(x)[-1]
        best = 0
        for i in range(1, len(logits)):
            if logits[i] > logits[best]:
                best = i
        return best

    def sgd_step(self, x, label, lr):
        """One SGD step on one sample; returns its cross-entropy loss."""
        acts = self.forward(x)
        logits = acts[-1]
        peak = max(logits)
        exps = [math.exp(v - peak) for v in logits]
        total = sum(exps)
        loss = -math.log(max(exps[label] / total, 1e-30))
        delta = array.array("f", [e / total for e in exps])
        delta[label] -= 1.0
        p = self.params
        for li in range(len(self.offsets) - 1, -1, -1):
            w_off, b_off = self.offsets[li]
            n_in = self.sizes[li]
            n_out = self.sizes[li + 1]
            a_in = acts[li]
            prev = None
            if li > 0:
                # Back-propagate through the weights before they are updated.
                prev = array.array("f", bytes(4 * n_in))
                for j in range(n_out):
                    d = delta[j]
                    if d:
                        base = w_off + j * n_in
                        for i in range(n_in):
                            prev[i] += p[base + i] * d
                for i in range(n_in):
                    if a_in[i] <= 0:
                        prev[i] = 0.0
            for j in range(n_out):
                g = lr * delta[j]
                if g:
                    base = w_off + j * n_in
                    for i in range(n_in):
                        p[base + i] -= g * a_in[i]
                    p[b_off + j] -= g
            delta = prev
        return loss

    def train_epoch(self, rows, labels, lr):
        total = 0.0
        for x, y in zip(rows, labels):
            total += self.sgd_step(x, y, lr)
        return total / max(1, len(rows))

    def quantise(self, calibration_rows, shift=24):
        """The int8 form (docs/models.md), hidden ranges calibrated on the device's rows."""
        n_layers = len(self.offsets)
        peaks = [1e-6] * (n_layers - 1)
        for x in calibration_rows:
            acts = self.forward(x)
            for li in range(n_layers - 1):
                m = max(acts[li + 1])
                if m > peaks[li]:
                    peaks[li] = m
        p = self.params
        s_in = 1.0 / 127
        layers = []
        for li, (w_off, b_off) in enumerate(self.offsets):
            n_in = self.sizes[li]
            n_out = self.sizes[li + 1]
            peak_w = 1e-12
            for i in range(n_in * n_out):
                a = abs(p[w_off + i])
                if a > peak_w:
                    peak_w = a
            s_w = peak_w / 127
            weight = array.array("b", bytes(n_in * n_out))
            for i in range(n_in * n_out):
                q = round(p[w_off + i] / s_w)
                weight[i] = -127 if q < -127 else (127 if q > 127 else q)
            bias = array.array("i", [round(p[b_off + j] / (s_in * s_w)) for j in range(n_out)])
            if li < n_layers - 1:
                s_out = peaks[li] / 127
                mult = round(s_in * s_w / s_out * (1 << shift))
                layers.append(QuantLayer(n_in, n_out, weight, bias, mult, shift, s_in * s_w))
                s_in = s_out
            else:
                layers.append(QuantLayer(n_in, n_out, weight, bias, 0, 0, s_in * s_w))
        return QuantModel(layers)
