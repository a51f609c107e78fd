"""Tiny decoders (Llama, Qwen3 with grouped-query attention) and a tokenizer trained here on a small text: offline."""

from pathlib import Path

import numpy as np
import torch

SHAPE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96)
WORDS = ("the cat dog bird sat ran flew on under over a mat tree roof and then slowly quickly home away red blue "
         "green big small old new").split()


def make_corpus(path: Path, lines: int = 160, seed: int = 0) -> Path:
    """Short sentences over a small vocabulary with a grammar (determiner, adjective, noun, verb, ...): learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(lines):
        rows.append(" ".join([str(rng.choice(["the", "a"])), str(rng.choice(WORDS[19:])), str(rng.choice(WORDS[1:4])),
                              str(rng.choice(WORDS[4:7])), str(rng.choice(WORDS[7:10])), "the",
                              str(rng.choice(WORDS[10:13])), "and then", str(rng.choice(WORDS[4:7])),
                              str(rng.choice(WORDS[15:17])), str(rng.choice(WORDS[17:19]))]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def make_tokenizer(path: Path, corpus: Path):
    """A word-level PreTrainedTokenizerFast trained on `corpus` with the `tokenizers` library, saved to `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train([str(corpus)], trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>")
    tokenizer.save_pretrained(path)
    return tokenizer


def make_tiny_decoder(path: Path, model_type: str = "llama", corpus: Path | None = None, seed: int = 0,
                      **overrides) -> Path:
    """A tiny random decoder saved with its tokenizer (trained on `corpus`, default one made beside it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    corpus = corpus or make_corpus(path.parent / f"{path.name}-corpus.txt")
    tokenizer = make_tokenizer(path, corpus)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), max_position_embeddings=64,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=None, tie_word_embeddings=False, **{**SHAPE, **overrides})
    if model_type == "qwen3":
        config.head_dim = SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path
