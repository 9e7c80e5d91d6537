"""Full-jitter exponential backoff, the one retry delay of every hubkeeper client.

Full jitter (a uniform delay between 0 and the exponential ceiling) spreads the retries of
many clients that failed together, so a recovering server is not hit by all of them at
once (AWS Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): uniform in
    ``[0, min(cap, base * 2 ** (attempt - 1))]``."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
