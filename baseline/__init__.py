"""The reference baseline: one multi-task network for standard-plane classification and
PS/FH segmentation (biometry comes from its masks through `iugc.challenge.biometry`)."""
