"""Judge-call prices from litellm's local price map, for the budget planner (calib.insight.plan).

litellm stays in the judges layer (tests/test_layers.py); the map is the one litellm ships
(``LITELLM_LOCAL_MODEL_COST_MAP=True``: never fetched from the network).
"""

from __future__ import annotations

import os

from calib.errors import TiebreakError

# Provider batch price as a share of the online price. OpenAI's Batch API: "a 50% cost discount
# compared to synchronous APIs" (platform.openai.com/docs/guides/batch); Anthropic's Message
# Batches, Vertex AI batch prediction and Bedrock batch inference are also half price. litellm
# applies the same half when a model has no batch price (calib.judges.batch.batch_rates).
BATCH_DISCOUNT = 0.5


def price_per_token(model: str, batch: bool) -> tuple[float, float]:
    """(USD per input token, per output token) of ``model`` in litellm's local price map; with
    ``batch`` the map's batch price, else the online price x ``BATCH_DISCOUNT``. An unknown model
    is a ``TiebreakError`` saying what to give instead."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        info = litellm.get_model_info(model=model)
    except Exception:  # noqa: BLE001 - litellm raises several classes for an unknown model
        raise TiebreakError(f"judge model {model!r} is not in litellm's price map: give "
                            "--judge-cost-per-call USD") from None
    out = []
    for kind in ("input", "output"):
        online = info.get(f"{kind}_cost_per_token") or 0.0
        b = info.get(f"{kind}_cost_per_token_batches")
        out.append((b if b is not None else online * BATCH_DISCOUNT) if batch else online)
    return out[0], out[1]
