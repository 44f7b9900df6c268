"""The update a device contributes to a round: local training from the global model, and the
difference (trained minus global) handed to the masking stream chunk by chunk."""
from ztfw.records import dequantise, float_row


def training_steps(mlp, blob, records, round_id, epochs, lr, max_samples=0):
    """Local training as a generator (one SGD sample per step) from the global model `blob`.
    Deterministic: rows start at an offset fixed by the round, so a round can be replayed."""
    blob.fill_float(mlp.params)
    n = len(records) if not max_samples else min(max_samples, len(records))
    row = float_row(records.n_features)
    start = (round_id * 131) % max(1, len(records))
    for _ in range(epochs):
        for label, q in records.rows(start, n):
            mlp.sgd_step(dequantise(q, row), label, lr)
            yield


def delta_source(params, blob):
    """The update a round aggregates, trained weights minus the global model, as a chunk
    source for the masking stream: nothing update-sized is allocated."""
    q = blob.q
    scales = blob.scales()

    def source(start, n, out):
        for off, size, scale in scales:
            for i in range(max(start, off), min(start + n, off + size)):
                v = q[i]
                out[i - start] = params[i] - (v - 256 if v > 127 else v) * scale

    return source
