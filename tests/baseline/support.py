"""What the baseline's tests share: a tiny network that trains in seconds, and reading a run's log."""
import csv

TINY = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8], "size": 64, "batch_size": 8}


def log_rows(path) -> list[dict]:
    """The rows of a run's log.csv (the file closed again)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
