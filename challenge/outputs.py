"""The files a submission writes beside its masks, named once here for every side that reads
or writes them (the evaluator, the sandbox's output checks, the baseline), and the rule a
standard-plane probability must meet.

>>> valid_probability(0.93), valid_probability(1), valid_probability(float("nan")), valid_probability(True)
(True, True, False, False)
"""
from __future__ import annotations

import math

PROBABILITIES_FILE = "predictions.json"   # {"<case_id>": {"p_standard_plane": 0.93}}
LANDMARKS_FILE = "landmarks.json"         # {"<case_id>": {"PS1": [x, y], "PS2": [x, y], "FH1": [x, y]}}


def valid_probability(p) -> bool:
    """Whether ``p`` is a usable p(standard plane): a real number, finite, in [0, 1]."""
    return isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 <= p <= 1
