"""ResNet-18 morphology classifier (paper Sect. 5.3).

Encoder: torchvision's ResNet-18 architecture, randomly initialised, with a
1-channel first convolution and the final fully connected layer removed, so it
maps (B, 1, H, W) images in [-1, 1] to 512 features.  Head: BatchNorm1d(512)
-> Dropout -> Linear(512, 256) -> Dropout -> Linear(256, 4), with no
non-linearity between the linear layers (as in the paper).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MorphologyClassifier", "EMBEDDING_DIM"]

#: Size of the encoder output (and of :meth:`MorphologyClassifier.embed`).
EMBEDDING_DIM = 512


class MorphologyClassifier(nn.Module):
    """ResNet-18 encoder + batch norm + two-layer linear head.

    Parameters
    ----------
    num_classes : int
        Number of logits (4: FRI, FRII, Compact, Bent).
    hidden_units : int
        Width of the hidden linear layer (paper: 256).
    dropout : float
        Dropout probability after the encoder and after the hidden layer.
    in_channels : int
        Image channels (1 for radio intensity).
    """

    def __init__(self, *, num_classes: int = 4, hidden_units: int = 256, dropout: float = 0.5,
                 in_channels: int = 1) -> None:
        super().__init__()
        from torchvision.models import resnet18

        encoder = resnet18(weights=None)
        encoder.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        encoder.fc = nn.Identity()
        self.encoder = encoder
        self.norm = nn.BatchNorm1d(EMBEDDING_DIM)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(EMBEDDING_DIM, hidden_units),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )
        self.config = {"num_classes": num_classes, "hidden_units": hidden_units, "dropout": dropout,
                       "in_channels": in_channels}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-normalised 512-dim encoder features of images ``x`` (B, 1, H, W) in [-1, 1]."""
        return self.norm(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) of images ``x`` (B, 1, H, W) in [-1, 1]."""
        return self.head(self.embed(x))
