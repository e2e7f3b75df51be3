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


class StyleNoise:
    """Feature-statistics noise for training (Li et al., ICLR 2022, "Uncertainty modeling
    for out-of-distribution generalization", DSU), as a forward hook.

    A scanner changes the per-channel mean and spread of shallow features more than their
    pattern (which is why AdaBN helps). With probability ``p`` per forward pass in training
    mode, each frame's per-channel feature mean ``mu`` and standard deviation ``sigma``
    (over H, W) are replaced by ``mu + e1 * spread(mu)`` and ``sigma + e2 * spread(sigma)``,
    where ``spread`` is the standard deviation of that statistic across the batch and
    ``e1, e2`` are standard normal per frame and channel (the new sigma at least a tenth of
    the old: a negative one would invert the pattern); the normalised pattern
    ``(x - mu) / sigma`` is kept. In eval mode, or for a batch of one, the output is
    untouched, so exported and predicting networks are unaffected.
    """

    def __init__(self, p: float):
        if not 0 <= p <= 1:
            raise ValueError(f"style noise probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, module: nn.Module, inputs, x: torch.Tensor):
        if not module.training or x.shape[0] < 2 or float(torch.rand(())) >= self.p:
            return None
        mu = x.mean(dim=(2, 3), keepdim=True)
        sigma = (x.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt()
        mu_spread = (mu.var(dim=0, keepdim=True) + 1e-6).sqrt().detach()
        sigma_spread = (sigma.var(dim=0, keepdim=True) + 1e-6).sqrt().detach()
        new_mu = mu + torch.randn_like(mu) * mu_spread
        new_sigma = torch.maximum(sigma + torch.randn_like(sigma) * sigma_spread, sigma / 10)  # a negative one would invert the pattern
        return (x - mu) / sigma * new_sigma + new_mu


STYLE_NOISE_STAGES = ("layer1", "layer2")
"""Where :func:`add_style_noise` perturbs a ResNet encoder: after its two shallowest stages."""


def add_style_noise(model: BaselineNet, p: float) -> list:
    """Hook :class:`StyleNoise` onto the encoder's shallow stages (ResNet encoders only);
    returns the hook handles (``handle.remove()`` takes them off). Parameters and the
    state dict are unchanged.

    >>> net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    >>> len(add_style_noise(net, 0.5))
    2
    """
    encoder = model.net.encoder
    missing = [name for name in STYLE_NOISE_STAGES if not hasattr(encoder, name)]
    if missing:
        raise ValueError(f"style noise needs a ResNet encoder (stages {list(STYLE_NOISE_STAGES)}); "
                         f"{model.config['encoder_name']} has no {missing}")
    hook = StyleNoise(p)
    return [getattr(encoder, name).register_forward_hook(hook) for name in STYLE_NOISE_STAGES]
