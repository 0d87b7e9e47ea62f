"""Small models built from configs with seeded random weights, and a word-level tokenizer."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

WORDS = ("the a cat dog bird fish mat rug tree house car road sat ran flew swam on under in near by with "
         "and was is big small red blue green old new happy sad quick slow jumped slept ate saw found "
         "paris rome london tokyo berlin france italy england japan germany capital city of river "
         "mountain north south east west king queen man woman boy girl one two three four five").split()


def word_tokenizer():
    """A whitespace word-level ``PreTrainedTokenizerFast`` over a fixed vocabulary (index 0 = ``<unk>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import decoders
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


def lm_config(arch: str, vocab_size: int, n_layers: int = 4, d_model: int = 64, n_heads: int = 4,
              init_std: float = 0.02):
    """A small config of ``arch`` ('gpt2', 'gpt_neox' or 'llama')."""
    import transformers as tf

    ids: dict[str, Any] = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=init_std)
    if arch == "gpt2":
        return tf.GPT2Config(**ids, vocab_size=vocab_size, n_positions=64, n_embd=d_model, n_layer=n_layers,
                             n_head=n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if arch == "gpt_neox":
        # ``rotary_pct`` is a named argument in transformers 4.x and a legacy kwarg in 5.x (whose stubs lack it):
        # passed through a dict so both versions get the same config
        neox: dict[str, Any] = dict(rotary_pct=0.5)
        return tf.GPTNeoXConfig(**ids, vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                                num_attention_heads=n_heads, intermediate_size=4 * d_model,
                                max_position_embeddings=64, **neox)
    if arch == "llama":
        return tf.LlamaConfig(**ids, vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                              num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
                              intermediate_size=2 * d_model, max_position_embeddings=64)
    raise ValueError(f"unknown architecture {arch!r}; choose gpt2, gpt_neox or llama")


def build_tiny_lm(arch: str = "gpt2", seed: int = 0, **kw):
    """(model, tokenizer): a ``*ForCausalLM`` with seeded random weights, in eval mode."""
    import transformers as tf

    tok = word_tokenizer()
    config = lm_config(arch, len(tok), **kw)
    cls = {"gpt2": tf.GPT2LMHeadModel, "gpt_neox": tf.GPTNeoXForCausalLM, "llama": tf.LlamaForCausalLM}[arch]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(config)
    model.config._name_or_path = f"tiny-{arch.replace('_', '')}"
    return model.eval(), tok


class MLP(nn.Module):
    """A plain MLP: ``net`` is Linear-ReLU-Linear-ReLU-Linear."""

    def __init__(self, sizes: tuple[int, ...] = (16, 32, 32, 4)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_mlp(seed: int = 0, sizes: tuple[int, ...] = (16, 32, 32, 4)) -> MLP:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLP(sizes).eval()
