"""Lenses: read what the residual stream predicts after each layer (logit lens, tuned lens), and the attention
patterns of every head, as labelled results with tokens on their axes.

>>> import causalscope as cs
>>> r = cs.logit_lens("facts-gpt", "Stailu Heilpes was born in the city of", answer="Arvena")
>>> r.dims
('layer', 'position')
>>> cs.attention_patterns("tiny-gpt2", "the cat sat on the mat").dims
('layer', 'head', 'query', 'key')
"""
from ._attention import AttentionPatterns, attention_patterns, attention_sites
from ._compare import LensComparison
from ._logit import LensResult, logit_lens
from ._tuned import TunedLens, tuned_lens

__all__ = ["AttentionPatterns", "LensComparison", "LensResult", "TunedLens", "attention_patterns", "attention_sites",
           "logit_lens", "tuned_lens"]
