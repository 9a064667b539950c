"""Inside the model: the prompt's tokens, its text features and the UNet's cross-attention maps.

* :mod:`pipelines.attention.tokens`: BPE tokens with ids, start/end/padding, what is cut off, tokens
  never seen in training; per-token features, two-prompt similarity, pooled embedding, nearest captions.
* :mod:`pipelines.attention.maps`: the recording/editing attention processor, DAAM aggregation.
* :mod:`pipelines.attention.runs`: runs with maps recorded, re-weighting and word swap (Prompt-to-Prompt).
"""

from pipelines.attention.maps import (MAP_MODES, MAX_SIDE, Record, Session, aggregate, check_cross_attention, relative,
                                      session)
from pipelines.attention.runs import AttentionRun, Reweight, Swap, find_token, find_tokens, reweight, run, swap
from pipelines.attention.tokens import Token, TokenView, features, nearest_captions, similarity, tokens, unseen_words

__all__ = ["MAP_MODES", "MAX_SIDE", "AttentionRun", "Record", "Reweight", "Session", "Swap", "Token", "TokenView", "aggregate",
           "check_cross_attention", "features", "find_token", "find_tokens", "nearest_captions", "relative", "reweight", "run", "session",
           "similarity", "swap", "tokens", "unseen_words"]
