"""The CNN-LSTM intrusion detector.

An encoded record (F features in [0, 1]) is read as a one-channel sequence of length F:
Conv1d blocks learn local patterns over neighbouring features, an LSTM reads the resulting
sequence, and a dense head classifies a readout of its outputs. The defaults give about
0.5 M parameters, the size of the ZTA-FL paper's model; every width is configurable.

Readout: "max" (default) takes the element-wise maximum of the LSTM outputs over all steps;
"last" takes only the last step. The sequence runs over *features*, not time, and the numeric
columns come first in an encoded row: with "last", the head depends almost only on the final
steps, i.e. the categorical one-hots, and the model learns next to nothing from the numeric
columns (on UNSW-NB15 it ignored them entirely; docs/models.md has the measurements). "max"
gives every step a direct path to the head at no cost in parameters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

READOUTS = ("max", "last")


@dataclass
class CNNLSTMConfig:
    n_features: int
    n_classes: int
    conv_channels: tuple[int, ...] = (64, 128, 128)
    kernel_size: int = 3
    pool_every: int = 1          # a max-pool (stride 2) after each conv block
    lstm_hidden: int = 256
    dense: int = 128
    dropout: float = 0.1
    readout: str = "max"         # "max" over all LSTM steps, or "last" step only

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, not {self.readout!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CNNLSTMConfig":
        d = dict(d)
        d["conv_channels"] = tuple(int(c) for c in d["conv_channels"])
        d.setdefault("readout", "last")  # model files written before the readout was configurable
        return cls(**d)

    @classmethod
    def small(cls, n_features: int, n_classes: int) -> "CNNLSTMConfig":
        """A few thousand parameters: for tests and many-client simulations. It keeps the "last"
        readout the federated figures in docs/models.md were measured with."""
        return cls(n_features, n_classes, conv_channels=(8, 16), lstm_hidden=16, dense=16, dropout=0.0,
                   readout="last")


class CNNLSTM(nn.Module):
    kind = "cnn-lstm"

    def __init__(self, config: CNNLSTMConfig):
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        in_ch = 1
        length = config.n_features
        for out_ch in config.conv_channels:
            blocks += [nn.Conv1d(in_ch, out_ch, config.kernel_size, padding=config.kernel_size // 2),
                       nn.BatchNorm1d(out_ch), nn.ReLU()]
            # Halve the sequence while it is long enough: the LSTM then reads fewer steps.
            if config.pool_every and length >= 8:
                blocks.append(nn.MaxPool1d(2))
                length //= 2
            in_ch = out_ch
        self.conv = nn.Sequential(*blocks)
        self.lstm = nn.LSTM(in_ch, config.lstm_hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.lstm_hidden, config.dense),
                                  nn.ReLU(), nn.Linear(config.dense, config.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1))            # (B, C, L)
        out, _ = self.lstm(h.transpose(1, 2))    # (B, L, H)
        return self.head(readout(out, self.config.readout))


def readout(out: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, L, H) LSTM outputs -> (B, H) head input."""
    return out.amax(dim=1) if kind == "max" else out[:, -1, :]
