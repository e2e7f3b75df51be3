"""The multi-task network: a segmentation-models-pytorch U-Net with its auxiliary
classification head -- one forward pass gives 3-class mask logits and p(standard plane)."""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 3  # background, pubic symphysis, fetal head


class BaselineNet(nn.Module):
    """U-Net (encoder trained from scratch unless ``encoder_weights`` names a download).

    Parameters
    ----------
    encoder_name : smp encoder, e.g. "resnet34", "resnet18", "efficientnet-b0".
    encoder_weights : None (from scratch) or a name smp can download (e.g. "imagenet").
    encoder_depth : number of encoder stages (3-5).
    decoder_channels : channels per decoder stage, one per encoder stage.
    in_channels : 1 for grey frames.
    classifier_dropout : dropout of the auxiliary classification head.
    input_norm : "frame" standardises each frame to zero mean and unit variance inside the
        network (so PyTorch, ONNX and every caller see the same thing; it makes the model
        less sensitive to a scanner's gain and dynamic range), or "none".

    ``forward(x)`` takes (N, in_channels, H, W) with H, W multiples of 2**encoder_depth
    and returns ``(mask_logits (N, 3, H, W), standard_logit (N,))``.

    >>> net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    >>> masks, standard = net(torch.zeros(2, 1, 64, 64))
    >>> tuple(masks.shape), tuple(standard.shape)
    ((2, 3, 64, 64), (2,))
    """

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        in_channels: int = 1,
        classifier_dropout: float = 0.2,
        input_norm: str = "frame",
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        if len(decoder_channels) != encoder_depth:
            raise ValueError(f"decoder_channels needs {encoder_depth} entries (one per encoder stage), got {len(decoder_channels)}")
        if input_norm not in ("frame", "none"):
            raise ValueError(f"input_norm must be 'frame' or 'none', got {input_norm!r}")
        self.input_norm = input_norm
        self.config = {
            "encoder_name": encoder_name,
            "encoder_depth": encoder_depth,
            "decoder_channels": list(decoder_channels),
            "in_channels": in_channels,
            "classifier_dropout": classifier_dropout,
            "input_norm": input_norm,
        }
        self.net = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=NUM_CLASSES,
            aux_params={"classes": 1, "dropout": classifier_dropout},
        )
        self.stride = 2**encoder_depth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_norm == "frame":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / (std + 1e-3)
        masks, standard = self.net(x)
        return masks, standard.squeeze(1)

    def encoder_parameters(self):
        return self.net.encoder.parameters()
