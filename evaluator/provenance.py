"""Where a result comes from: the ``provenance`` block of every result JSON.

Two results are comparable (one ranking) only when they were scored on the same truth
by the same challenge definition; these fields say so without re-reading the data:

- ``platform_version``: the installed ``iugc-platform`` distribution's version;
- ``challenge``, ``challenge_sha256``: the definition's name and the sha256 of its
  validated content (canonical JSON: comments and formatting do not count);
- ``truth_manifest_sha256``: sha256 of the truth that was scored, the canonical JSON
  list of ``[case_id, truth mask sha256, standard_plane]`` sorted by case id: equal
  exactly when the same cases were scored against the same masks and labels;
- ``n_cases``, ``split`` (the ``--split`` selected, else null), ``synthetic_truth``;
- ``dataset_manifest_sha256``: sha256 of the dataset's ``manifest.json`` file (null for
  a plain folder of masks), naming the dataset release the cases came from;
- ``created_at``: UTC time, ISO 8601; ``image_digest``: the submission image's id
  (``evaluate-image``; null for ``iugc evaluate``).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache

from iugc.challenge.definition import ChallengeDefinition
from iugc.common.files import sha256_bytes


@lru_cache(maxsize=1)
def platform_version() -> str:
    """The installed platform's version (``iugc-platform``), or "unknown" when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iugc-platform")
    except PackageNotFoundError:
        return "unknown"


def challenge_sha256(challenge: ChallengeDefinition) -> str:
    """sha256 of the definition's validated content as canonical JSON."""
    text = json.dumps(challenge.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(text.encode("utf-8"))


def truth_manifest_sha256(entries) -> str:
    """sha256 of ``(case_id, truth_sha256 | None, standard_plane | None)`` entries, order-free.

    >>> a = truth_manifest_sha256([("2", "bb", True), ("1", "aa", None)])
    >>> a == truth_manifest_sha256([("1", "aa", None), ("2", "bb", True)])
    True
    >>> a == truth_manifest_sha256([("1", "aa", None)])
    False
    """
    rows = sorted([str(case_id), digest, label] for case_id, digest, label in entries)
    return sha256_bytes(json.dumps(rows, separators=(",", ":")).encode("utf-8"))


def provenance(
    challenge: ChallengeDefinition,
    entries,
    *,
    split: str | None = None,
    dataset_manifest_sha256: str | None = None,
    synthetic_truth: bool = False,
    image_digest: str | None = None,
) -> dict:
    """The ``provenance`` block; ``entries`` as for :func:`truth_manifest_sha256`."""
    entries = list(entries)
    return {
        "platform_version": platform_version(),
        "challenge": challenge.name,
        "challenge_sha256": challenge_sha256(challenge),
        "truth_manifest_sha256": truth_manifest_sha256(entries),
        "n_cases": len(entries),
        "split": split,
        "synthetic_truth": bool(synthetic_truth),
        "dataset_manifest_sha256": dataset_manifest_sha256,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image_digest": image_digest,
    }
