"""Train the bundled facts model: ``python -m causalscope.zoo.train_facts --out src/causalscope/zoo/data``.

Makes the corpus (``causalscope.zoo.facts.make_corpus(seed)``), builds a word-level tokenizer over its words,
trains a small GPT-2 from scratch on the train prompts (loss on the answer token only), and writes
``<out>/facts-gpt/{model.safetensors, config.json, tokenizer.json, tokenizer_config.json, facts.json}``.
Everything is seeded and the data order is fixed: a rerun on the same machine (same torch, same thread
count) wrote byte-identical files, though CPU kernels do not promise it (one rerun on a heavily loaded
machine drifted numerically; docs/facts-model.md). About 3 minutes on 2 idle CPU cores.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .facts import Fact, make_corpus, prompts

PAD, UNK = "<pad>", "<unk>"


@dataclass
class TrainConfig:
    """Model and optimisation settings. The defaults are what the shipped model was trained with."""

    seed: int = 0
    n_layer: int = 8
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 32
    steps: int = 5000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    threads: int = 2
    eval_every: int = 500


# -- tokenizer and data -------------------------------------------------------------------------------
def vocabulary(corpus: dict[str, Any]) -> list[str]:
    """``<unk>``, ``<pad>``, then every word of every prompt and answer (train and held-out), sorted."""
    words: set[str] = set()
    for f in prompts(corpus, "all"):
        words.update(f.prompt.split())
        words.add(f.answer)
    return [UNK, PAD, *sorted(words)]


def build_tokenizer(corpus: dict[str, Any]):
    """A word-level ``PreTrainedTokenizerFast`` (whitespace pre-tokenizer) over the corpus vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(corpus))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD)


def encode(tok, items: list[Fact]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids right-padded with ``<pad>``, index of each prompt's last token, answer token ids)."""
    rows = [tok(f.prompt, add_special_tokens=False)["input_ids"] for f in items]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    last = torch.tensor([len(r) - 1 for r in rows])
    answers = torch.tensor(tok.convert_tokens_to_ids([f.answer for f in items]))
    assert int((answers == tok.unk_token_id).sum()) == 0, "an answer is not in the vocabulary"
    return ids, last, answers


# -- model and training -------------------------------------------------------------------------------
def make_model(cfg: TrainConfig, vocab_size: int, pad_id: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    # GPT-2's tanh GELU through torch's fused kernel: the same function as "gelu_new" (they differ by float
    # rounding, < 3e-7), in one elementwise pass instead of seven: about a fifth off a CPU trace
    config = GPT2Config(vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=pad_id, eos_token_id=pad_id, pad_token_id=pad_id,
                        activation_function="gelu_pytorch_tanh")
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def answer_logits(model, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Logits at each row's last prompt token (``ids`` right-padded with the config's ``pad_token_id``)."""
    mask = (ids != model.config.pad_token_id).long()
    hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    return model.lm_head(hidden[torch.arange(ids.shape[0]), last])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 0 at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batches(n: int, cfg: TrainConfig):
    """Row indices of each step: a fresh permutation per epoch from a generator seeded with ``cfg.seed``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    perm, at = torch.randperm(n, generator=gen), 0
    while True:
        if at + cfg.batch_size > n:
            perm, at = torch.randperm(n, generator=gen), 0
        yield perm[at: at + cfg.batch_size]
        at += cfg.batch_size


@torch.no_grad()
def accuracy(model, tok, items: list[Fact], batch_size: int = 500) -> float:
    """Top-1 accuracy of the answer token (batched; ``exact_accuracy`` is the plain per-prompt loop)."""
    model.eval()
    ids, last, answers = encode(tok, items)
    hits = 0
    for i in range(0, len(items), batch_size):
        pred = answer_logits(model, ids[i: i + batch_size], last[i: i + batch_size]).argmax(-1)
        hits += int((pred == answers[i: i + batch_size]).sum())
    return hits / len(items)


@torch.no_grad()
def exact_accuracy(model, tok, items: list[Fact]) -> float:
    """Top-1 accuracy, one prompt at a time: ``model(input_ids).logits[0, -1].argmax() == answer``."""
    model.eval()
    hits = 0
    for f in items:
        ids = tok(f.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        hits += int(model(input_ids=ids).logits[0, -1].argmax()) == tok.convert_tokens_to_ids(f.answer)
    return hits / len(items)


def train_step(model, opt, ids: torch.Tensor, last: torch.Tensor, answers: torch.Tensor, lr: float,
               grad_clip: float = 1.0) -> float:
    """One AdamW step on the answer-token cross-entropy of a batch; returns the loss."""
    model.train()
    for group in opt.param_groups:
        group["lr"] = lr
    loss = torch.nn.functional.cross_entropy(answer_logits(model, ids, last), answers)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach().item()


def train(corpus: dict[str, Any], cfg: TrainConfig, log: Callable[[str], None] | None = print,
          ) -> tuple[Any, Any, dict[str, Any]]:
    """Train from scratch on the train prompts of ``corpus``. Returns ``(model, tokenizer, history)``:
    ``history["loss"]`` holds the loss of every step, ``history["evals"]`` the periodic accuracies."""
    torch.set_num_threads(cfg.threads)
    tok = build_tokenizer(corpus)
    train_items, held_items = prompts(corpus, "train"), prompts(corpus, "heldout")
    ids, last, answers = encode(tok, train_items)
    model = make_model(cfg, len(tok), tok.pad_token_id)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    history: dict[str, Any] = {"loss": [], "evals": []}
    order = batches(len(train_items), cfg)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        rows = next(order)
        history["loss"].append(train_step(model, opt, ids[rows], last[rows], answers[rows], lr_at(step, cfg),
                                          cfg.grad_clip))
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            recent = history["loss"][-cfg.eval_every:]
            ev = {"step": step + 1, "seconds": round(time.perf_counter() - t0, 1),
                  "loss": round(sum(recent) / len(recent), 5),
                  "train_acc": round(accuracy(model, tok, train_items), 5),
                  "heldout_acc": round(accuracy(model, tok, held_items), 5)}
            history["evals"].append(ev)
            if log:
                log(json.dumps(ev))
    history["seconds"] = time.perf_counter() - t0
    return model.eval(), tok, history


# -- writing the shipped files ------------------------------------------------------------------------
def save(model, tok, corpus: dict[str, Any], summary: dict[str, Any], folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "model.safetensors").chmod(0o644)
    model.config.to_json_file(str(folder / "config.json"))
    tok.save_pretrained(str(folder))
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        (folder / extra).unlink(missing_ok=True)
    write_facts_json(corpus, summary, folder)


def write_facts_json(corpus: dict[str, Any], summary: dict[str, Any], folder: Path) -> None:
    """``facts.json``: the corpus (exactly what ``make_corpus`` returned) plus ``training`` (the summary)."""
    (folder / "facts.json").write_text(json.dumps({**corpus, "training": summary}, indent=1) + "\n",
                                       encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m causalscope.zoo.train_facts", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder that receives facts-gpt/")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--layers", type=int, default=TrainConfig.n_layer, help="transformer blocks")
    args = p.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, threads=args.threads, n_layer=args.layers)
    corpus = make_corpus(args.seed)
    model, tok, history = train(corpus, cfg)
    folder = args.out / "facts-gpt"
    train_items, held_items = prompts(corpus, "train"), prompts(corpus, "heldout")
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "vocab_size": len(tok), "parameters": sum(p.numel() for p in model.parameters()),
        "train_prompts": len(train_items), "heldout_prompts": len(held_items),
        "final_loss": round(sum(history["loss"][-100:]) / len(history["loss"][-100:]), 6),
        "train_seconds": round(history["seconds"], 1), "threads": cfg.threads, "torch": torch.__version__,
        "evals": history["evals"]}
    save(model, tok, corpus, summary, folder)
    # the recorded accuracies are those of the files just written, reloaded, one prompt at a time
    shipped_model, shipped_tok = load_dir(folder)
    summary["train_acc"] = exact_accuracy(shipped_model, shipped_tok, train_items)
    summary["heldout_acc"] = exact_accuracy(shipped_model, shipped_tok, held_items)
    summary["heldout_acc_by_relation"] = {
        rel: exact_accuracy(shipped_model, shipped_tok, [f for f in held_items if f.relation == rel])
        for rel in corpus["relations"]}
    write_facts_json(corpus, summary, folder)
    print(json.dumps({k: summary[k] for k in ("parameters", "final_loss", "train_seconds", "train_acc",
                                              "heldout_acc", "heldout_acc_by_relation")}, indent=1))
    return summary


def load_dir(folder: Path):
    """``(model, tokenizer)`` from a folder written by :func:`save` (``load_facts_gpt`` reads the same files
    from the package data)."""
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from .facts import tokenizer_from_json

    config = GPT2Config.from_json_file(str(folder / "config.json"))
    model = GPT2LMHeadModel(config)
    state = load_file(str(folder / "model.safetensors"))
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    model.load_state_dict(state, strict=True)
    return model.eval(), tokenizer_from_json((folder / "tokenizer.json").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
