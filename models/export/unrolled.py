"""An export twin of the CNN-LSTM whose LSTM is written out as linear layers.

litert-torch's PT2E quantiser annotates linear and convolution layers but not `aten.lstm`:
exported as is, the LSTM weights (most of the model) stay float32 in the .tflite file. The twin
computes exactly the same function, with the input projection as one Linear over all steps and the
recurrent projection as a Linear per step (the sequence length is fixed by the feature count), so
every weight matrix is quantised. Only torch and models.cnn_lstm are imported: this runs in
.venv-litert too.
"""
from __future__ import annotations

import torch
from torch import nn

from ztfl.models.cnn_lstm import READOUTS


class UnrolledLSTM(nn.Module):
    """One batch-first nn.LSTM layer as Linear layers; returns the last hidden state
    (readout "last") or the element-wise maximum of the hidden states over all steps ("max")."""

    def __init__(self, lstm: nn.LSTM, readout: str = "last"):
        super().__init__()
        if lstm.num_layers != 1 or lstm.bidirectional or not lstm.batch_first:
            raise ValueError("only a single-layer, one-direction, batch-first LSTM is unrolled")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}")
        hidden = lstm.hidden_size
        self.hidden = hidden
        self.readout = readout
        self.ih = nn.Linear(lstm.input_size, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        with torch.no_grad():
            self.ih.weight.copy_(lstm.weight_ih_l0)
            self.ih.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
            self.hh.weight.copy_(lstm.weight_hh_l0)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        gates_in = self.ih(seq)  # (B, L, 4H)
        H = self.hidden
        h = c = peak = None
        for t in range(seq.shape[1]):
            g = gates_in[:, t, :] if h is None else gates_in[:, t, :] + self.hh(h)
            # PyTorch gate order: input, forget, cell, output.
            i = torch.sigmoid(g[:, :H])
            f = torch.sigmoid(g[:, H:2 * H])
            cell = torch.tanh(g[:, 2 * H:3 * H])
            o = torch.sigmoid(g[:, 3 * H:])
            c = i * cell if c is None else f * c + i * cell
            h = o * torch.tanh(c)
            if self.readout == "max":
                # a running maximum: the same as amax over the stacked steps, without the stack
                peak = h if peak is None else torch.maximum(peak, h)
        return peak if self.readout == "max" else h


class UnrolledCNNLSTM(nn.Module):
    """Same outputs as a models.cnn_lstm.CNNLSTM, with its LSTM unrolled (eval mode only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.conv = model.conv
        self.lstm = UnrolledLSTM(model.lstm, model.config.readout)
        self.head = model.head
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1))
        return self.head(self.lstm(h.transpose(1, 2)))
