"""The CNN-LSTM intrusion detector.

An encoded record (F features in [0, 1]) is read as a one-channel sequence of length F:
Conv1d blocks learn local patterns over neighbouring features, an LSTM reads the resulting
sequence, and a dense head classifies its last hidden state. The defaults give about
0.5 M parameters, the size of the ZTA-FL paper's model; every width is configurable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CNNLSTMConfig":
        d = dict(d)
        d["conv_channels"] = tuple(int(c) for c in d["conv_channels"])
        return cls(**d)

    @classmethod
    def small(cls, n_features: int, n_classes: int) -> "CNNLSTMConfig":
        """A few thousand parameters: for tests and many-client simulations."""
        return cls(n_features, n_classes, conv_channels=(8, 16), lstm_hidden=16, dense=16, dropout=0.0)


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
        return self.head(out[:, -1, :])
