"""Tiny models and data sets for the training tests, made in temporary directories (nothing downloaded).

Imported by the other test_training_* / test_data_* modules; its own tests check the fixtures.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from earlybird.training.entrypoints import load_entry_point

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("good great fine nice love happy bad awful poor sad hate boring movie film plot actor the a is was it "
         "and very not what who where when paris london rome berlin city river capital of in on by").split()


def load_script(relative: str, name: str):
    """Import an entry-point script (Finetuning/run_vit.py, ...) by path, to call its main(argv) in-process."""
    return load_entry_point(ROOT / relative, name)


@contextlib.contextmanager
def one_thread():
    """Two threads on a shared two-core machine can be ~50x slower than one (spinning OpenMP workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- ViT


def make_tiny_vit(path: Path, image_size: int = 16, with_processor: bool = True) -> Path:
    """A 'pretrained' ViTModel (like google/vit-base-patch16-224-in21k: no classifier) and its image processor."""
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit import ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(image_size=image_size, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=37)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    if with_processor:
        ViTImageProcessorPil(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                             image_std=[0.5] * 3).save_pretrained(path)
    return path


def make_imagefolder(path: Path, per_class: int = 12, splits=("train", "validation"), classes=("red", "green", "blue"),
                     size=(20, 18)) -> Path:
    """imagefolder layout: <split>/<class>/<n>.png, one dominant colour per class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c, name in enumerate(classes):
            folder = path / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                array = rng.integers(0, 80, size=(size[1], size[0], 3))
                array[..., c] += 150
                Image.fromarray(array.astype(np.uint8)).save(folder / f"{i}.png")
    return path


# --------------------------------------------------------------------------- BERT


def make_tiny_bert(path: Path, max_position: int = 64) -> Path:
    """A tiny BertModel and a BertTokenizerFast over a small word-piece vocabulary written here."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789.,?!'"]
    vocab += [f"##{ch}" for ch in "abcdefghijklmnopqrstuvwxyz"]
    # transformers 5: the tokenizer takes the vocabulary itself (`vocab_file=` would be silently ignored)
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=max_position)
    BertModel(config, add_pooling_layer=True).save_pretrained(path)
    return path


def make_sentiment_tsv(path: Path, rows: dict = None) -> Path:
    """train/dev/test TSV files (header sentence<TAB>label), GLUE SST-2 style."""
    rows = rows or {"train": 48, "dev": 16, "test": 16}
    rng = np.random.default_rng(0)
    positive, negative = WORDS[:6], WORDS[6:12]
    path.mkdir(parents=True, exist_ok=True)
    for split, n in rows.items():
        lines = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            words = list(rng.choice(positive if label else negative, size=3)) + list(rng.choice(WORDS[12:20], size=2))
            rng.shuffle(words)
            lines.append(" ".join(words) + " \t" + str(label))
        (path / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return path


def make_squad_json(path: Path, n: int = 12, seed: int = 0) -> Path:
    """A SQuAD v1.1 file: questions about capitals, answers located in the context."""
    rng = np.random.default_rng(seed)
    cities = ["paris", "london", "rome", "berlin"]
    articles = []
    for i in range(n):
        city = cities[int(rng.integers(len(cities)))]
        filler = " ".join(rng.choice(WORDS[:20], size=int(rng.integers(3, 30))))
        context = f"{filler} the capital is {city} . {filler}"
        start = context.index(f"capital is {city}") + len("capital is ")
        qa = {"id": f"q{seed}-{i}", "question": "what is the capital ?",
              "answers": [{"text": city, "answer_start": start}]}
        articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


# --------------------------------------------------------------------------- results


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_json(path: Path):
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- the fixtures' own checks


def test_tiny_bert_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    path = make_tiny_bert(tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer("the capital is paris .", return_offsets_mapping=True)
    assert tokenizer.is_fast
    assert tokenizer.unk_token_id not in encoded["input_ids"]
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True).replace(" .", ".") == "the capital is paris."


def test_squad_answers_are_in_the_context(tmp_path):
    data = read_json(make_squad_json(tmp_path / "squad.json"))
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                assert paragraph["context"][answer["answer_start"]:][: len(answer["text"])] == answer["text"]


@pytest.fixture
def single_thread():
    with one_thread():
        yield
