"""Image data: the PIL/numpy transforms, seeded augmentation, the digits default, loading and splits."""

import numpy as np
import pytest
import torch
from PIL import Image

from earlybird.data import common, images
from earlybird.data.digits import load_digits_dataset
from earlybird.errors import EarlyBirdError
from earlybird.records import load_records
from test_training_support import make_imagefolder, make_tiny_vit


def picture(width=30, height=20, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8))


@pytest.mark.parametrize("kind", ["train", "eval", "cifar"])
def test_transforms_give_normalised_square_tensors(kind):
    transform = images.ImageTransform(kind, 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = transform(picture(), np.random.default_rng(0))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_random_transforms_are_functions_of_the_generator():
    transform = images.ImageTransform("cifar", 16, (0.5,) * 3, (0.5,) * 3)
    a = transform(picture(), np.random.default_rng([1, 2, 3]))
    b = transform(picture(), np.random.default_rng([1, 2, 3]))
    assert torch.equal(a, b)
    others = [transform(picture(), np.random.default_rng([1, 2, s])) for s in range(4, 9)]
    assert any(not torch.equal(a, o) for o in others)


def test_eval_transform_is_resize_then_centre_crop():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (8, 0, 32, 20))  # white: the central 20x20 square and a margin
    out = images.ImageTransform("eval", 10, (0.0,) * 3, (1.0,) * 3)(image)
    assert out.shape == (3, 10, 10)
    assert torch.allclose(out, torch.ones_like(out))


def test_rand_augment_and_crops_keep_the_size():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert images.rand_augment(picture(12, 12), rng, num_ops=3, magnitude=9).size == (12, 12)
        assert images.random_resized_crop(picture(), rng, 8).size == (8, 8)
        assert images.random_crop_with_padding(np.asarray(picture(8, 8)), rng, 2).shape == (8, 8, 3)


def test_dataset_seeds_augmentation_per_epoch_and_example():
    dd = load_digits_dataset()
    transform = images.ImageTransform("cifar", 8, (0.5,) * 3, (0.5,) * 3, padding=1)
    ds = images.ImageClassificationDataset(dd["train"], "image", "label", transform, seed=3)
    first = ds[5]["pixel_values"]
    assert torch.equal(first, ds[5]["pixel_values"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[5]["pixel_values"])
    batch = images.collate_images([ds[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 8, 8, 3) and batch["pixel_values"].dtype == torch.uint8
    assert batch["labels"].dtype == torch.long


def test_digits_split_is_fixed_and_stratified():
    dd = load_digits_dataset()
    assert {k: len(v) for k, v in dd.items()} == {"train": 1197, "validation": 300, "test": 300}
    for split in dd.values():
        counts = np.bincount(split["label"], minlength=10)
        assert counts.min() >= 0.8 * counts.max() * 0.9  # every class, in proportion
    again = load_digits_dataset()
    assert dd["test"]["label"] == again["test"]["label"]
    assert np.array_equal(np.asarray(dd["test"][0]["image"]), np.asarray(again["test"][0]["image"]))
    assert dd["train"][0]["image"].size == (8, 8) and dd["train"][0]["image"].mode == "RGB"


def test_load_imagefolder_and_save_to_disk(tmp_path):
    folder = make_imagefolder(tmp_path / "folder", per_class=2, splits=("train", "test"))
    dd = common.load_dataset_any(str(folder), builder="imagefolder")
    assert set(dd) == {"train", "test"} and len(dd["train"]) == 6
    splits, final = common.resolve_splits(dd, "label", "test")
    assert final == "test" and splits["validation"] is splits["test"]
    dd.save_to_disk(str(tmp_path / "saved"))
    again = common.load_dataset_any(str(tmp_path / "saved"))
    assert again["train"].column_names == ["image", "label"]
    assert images.label_names(again["train"], "label") == ["blue", "green", "red"]


def test_splits_without_validation_or_with_unlabelled_test():
    import datasets

    train = datasets.Dataset.from_dict({"x": list(range(50)), "label": [i % 2 for i in range(50)]})
    test = datasets.Dataset.from_dict({"x": [0, 1], "label": [-1, -1]})  # hub test splits carry no labels
    splits, final = common.resolve_splits(datasets.DatasetDict({"train": train, "test": test}), "label", "d")
    assert final == "validation"
    assert len(splits["train"]) == 45 and len(splits["validation"]) == 5 and splits["test"] is splits["validation"]
    with pytest.raises(EarlyBirdError, match="no 'train' split"):
        common.resolve_splits(datasets.DatasetDict({"test": test}), "label", "d")


def test_missing_things_are_one_line_errors(tmp_path):
    import datasets

    with pytest.raises(EarlyBirdError, match="no such local directory"):
        common.load_dataset_any(str(tmp_path / "nope"))
    ds = datasets.Dataset.from_dict({"picture": [1], "label": [0]})
    with pytest.raises(EarlyBirdError, match="no image column .* columns: picture, label"):
        common.find_column(ds, images.IMAGE_COLUMNS, "image", "--dataset d")


def test_image_settings_from_the_processor_or_the_config(tmp_path):
    from transformers import ViTConfig

    with_processor = make_tiny_vit(tmp_path / "a", image_size=16)
    assert images.image_settings(str(with_processor), ViTConfig(image_size=16)) == (16, (0.5,) * 3, (0.5,) * 3)
    bare = make_tiny_vit(tmp_path / "b", image_size=12, with_processor=False)
    assert images.image_settings(str(bare), ViTConfig(image_size=12)) == (12, (0.5,) * 3, (0.5,) * 3)


def test_a_broken_image_processor_is_reported_not_replaced(tmp_path, capsys):
    from transformers import ViTConfig

    model = make_tiny_vit(tmp_path / "m", image_size=12)
    (model / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(EarlyBirdError, match="cannot load its image processor"):
        images.image_settings(str(model), ViTConfig(image_size=12))
    bare = make_tiny_vit(tmp_path / "bare", image_size=12, with_processor=False)
    capsys.readouterr()
    images.image_settings(str(bare), ViTConfig(image_size=12))
    assert "has no preprocessor_config.json" in capsys.readouterr().err  # the fallback is said, not silent


# --------------------------------------------------------------------------- the batched pipeline


def reference_pipeline(image, transform, rng):
    """The per-image PIL pipeline the batched one replaced, written out: PIL crops, flips and RandAugment, then the
    numpy normalisation of each image."""
    from PIL import ImageOps

    image, size = images.to_pil(image), transform.size
    if transform.kind == "eval":
        image = images.resize_center_crop(image, size)
    elif transform.kind == "train":
        image = images.random_resized_crop(image, rng, size)
        if transform.flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
    else:
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        if transform.padding > 0:
            pad = transform.padding
            padded = Image.new("RGB", (size + 2 * pad, size + 2 * pad))
            padded.paste(image, (pad, pad))
            left, top = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
            image = padded.crop((left, top, left + size, top + size))
        if transform.flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if transform.randaug_ops:
            image = images.rand_augment(image, rng, transform.randaug_ops, transform.randaug_magnitude)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(transform.mean, dtype=np.float32)) / np.asarray(transform.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


TRANSFORMS = [("cifar", dict(padding=2, flip=True, randaug_ops=3, randaug_magnitude=5)),
              ("cifar", dict(padding=0, flip=False, randaug_ops=0)),  # the digits preset
              ("train", dict(flip=True)), ("eval", {})]


@pytest.mark.parametrize("kind,options", TRANSFORMS)
def test_batches_are_bitwise_the_per_image_pil_pipeline(kind, options):
    """Same random draws per (seed, epoch, example), same pixels, same float32 values: a batch of __getitems__ equals
    the per-image PIL pipeline, for the digits split (decoded once, in memory) and for images of mixed sizes."""
    dd = load_digits_dataset()
    transform = images.ImageTransform(kind, 8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), **options)
    ds = images.ImageClassificationDataset(dd["train"], "image", "label", transform, seed=3)
    rows = list(range(0, len(dd["train"]), 37))
    for epoch in (0, 2):
        batch = ds.__getitems__(common.EpochIndices(rows, epoch))
        expected = torch.stack([reference_pipeline(dd["train"][i]["image"], transform,
                                                   np.random.default_rng([3, epoch, i])) for i in rows])
        assert batch["pixel_values"].dtype == torch.uint8  # shipped as bytes, normalised where the model is
        assert torch.equal(transform.normalise(batch["pixel_values"]), expected)
        assert batch["labels"].tolist() == [dd["train"][i]["label"] for i in rows]
    for i, size in enumerate([(30, 20), (8, 8), (5, 13), (8, 30)]):
        rng_a, rng_b = np.random.default_rng([1, i]), np.random.default_rng([1, i])
        assert torch.equal(transform(picture(*size, seed=i), rng_a), reference_pipeline(picture(*size, seed=i),
                                                                                         transform, rng_b))


def test_digits_preset_is_a_normalisation_of_the_decoded_split(monkeypatch):
    """The digits preset draws nothing and resizes nothing: a batch is the split's pixels, decoded once when the
    dataset is made, gathered and normalised -- no decoding, no PIL, no generator per example."""
    from earlybird.training.tasks import PRETRAIN_PRESETS

    preset = PRETRAIN_PRESETS["digits"]
    transform = images.ImageTransform("cifar", preset["image_size"], (0.5,) * 3, (0.5,) * 3,
                                      padding=preset["crop_padding"], flip=preset["flip"],
                                      randaug_ops=preset["randaug_ops"])
    assert not transform.random
    train = load_digits_dataset()["train"]
    ds = images.ImageClassificationDataset(train, "image", "label", transform)
    pixels = np.stack([np.asarray(train[i]["image"]) for i in range(len(train))])

    def refuse(*args, **kwargs):
        raise AssertionError("per-example work in a batch of in-memory digits")

    monkeypatch.setattr(images, "to_pil", refuse)
    monkeypatch.setattr(images.ImageTransform, "geometry", refuse)
    monkeypatch.setattr(np.random, "default_rng", refuse)
    rows = [5, 0, 1196, 7]
    batch = ds.__getitems__(rows)
    assert torch.equal(batch["pixel_values"], torch.from_numpy(pixels[rows]))  # the bytes, gathered
    expected = torch.from_numpy(((pixels[rows].astype(np.float32) / 255.0 - np.float32(0.5)) / np.float32(0.5))
                                .transpose(0, 3, 1, 2).copy())
    model_input = transform.on_device(batch, torch.float32)["pixel_values"]
    assert torch.equal(model_input, expected) and model_input.is_contiguous()


def test_the_epoch_comes_with_the_indices():
    dd = load_digits_dataset()
    transform = images.ImageTransform("cifar", 8, (0.5,) * 3, (0.5,) * 3, padding=1)
    ds = images.ImageClassificationDataset(dd["train"], "image", "label", transform, seed=3)
    epoch1 = ds.__getitems__(common.EpochIndices([5, 6], 1))["pixel_values"]
    assert not torch.equal(epoch1, ds.__getitems__([5, 6])["pixel_values"])  # self.epoch is 0
    ds.set_epoch(1)
    assert torch.equal(epoch1, ds.__getitems__([5, 6])["pixel_values"])
    assert torch.equal(epoch1[0], ds[5]["pixel_values"])


def saved_digits(tmp_path, rows=96):
    """The digits train split written with save_to_disk and read back: a data set decoded from files."""
    import datasets

    dd = load_digits_dataset()
    datasets.DatasetDict({"train": dd["train"].select(range(rows)), "validation": dd["validation"].select(range(32)),
                          "test": dd["test"].select(range(32))}).save_to_disk(str(tmp_path / "digits"))
    return tmp_path / "digits"


def test_worker_processes_and_batching_do_not_change_the_batches(tmp_path):
    """Data from files: decoded per batch (in workers by default); 2 worker processes living across epochs give the
    batches that the main process gives, which are the per-example ones stacked."""
    from torch.utils.data import DataLoader

    split = common.load_dataset_any(str(saved_digits(tmp_path)))["train"]
    transform = images.ImageTransform("cifar", 8, (0.5,) * 3, (0.5,) * 3, padding=1, randaug_ops=1)
    ds = images.ImageClassificationDataset(split, "image", "label", transform, seed=7)
    assert ds.decodes_from_files and common.default_num_workers(ds) >= 1
    memory = images.ImageClassificationDataset(load_digits_dataset()["train"], "image", "label", transform)
    assert not memory.decodes_from_files and common.default_num_workers(memory) == 0

    sampler = [common.EpochIndices(list(range(b, b + 16)), epoch) for epoch in (0, 1) for b in range(0, 96, 16)]
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=images.collate_images, num_workers=workers)
        batches[workers] = list(loader)
    for one, other, indices in zip(batches[0], batches[2], sampler):
        assert torch.equal(one["pixel_values"], other["pixel_values"]) and torch.equal(one["labels"], other["labels"])
        ds.set_epoch(indices.epoch)
        stacked = images.collate_images([ds[i] for i in indices])
        assert torch.equal(one["pixel_values"], stacked["pixel_values"])
    assert not torch.equal(batches[0][0]["pixel_values"], batches[0][6]["pixel_values"])  # epoch 1 differs


def test_augmented_run_resumed_with_workers_repeats_the_run_without(tmp_path, monkeypatch):
    """Crops, flips and RandAugment on data from files: a run interrupted with 2 worker processes and resumed with the
    default number (--dataloader-num-workers may change on --resume) gives bitwise the records and losses of an uninterrupted run in the main process; and the training
    DataLoader is made once per run, not once per epoch (6 batches an epoch, 20 steps)."""
    from earlybird.training import loop
    from test_training_support import load_script, one_thread, read_json, read_jsonl

    pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
    made = []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, dataset, *args, **kwargs):
            made.append((dataset, kwargs.get("num_workers")))
            super().__init__(dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "DataLoader", CountingLoader)
    argv = ["--dataset", str(saved_digits(tmp_path)), "--image-size", "8", "--patch-size", "4", "--num-layers", "1",
            "--hidden-size", "16", "--num-heads", "2", "--intermediate-size", "16", "--crop-padding", "1", "--flip",
            "--randaug-ops", "1", "--per-device-train-batch-size", "16", "--max-steps", "20", "--checkpoint-every",
            "8", "--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2", "--dropout", "0.1",
            "--disable-tqdm", "--logging-steps", "4"]
    with one_thread():
        assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv, "--dataloader-num-workers", "0"]) == 0
        train_loaders = [w for d, w in made if d.transform.kind == "cifar"]
        assert train_loaders == [0]  # one for 20 steps over 3+ epochs
        made.clear()
        cut = tmp_path / "cut"
        assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", "11",
                              "--dataloader-num-workers", "2"]) == 3
        # (a flag not given on --resume is the run's own: the default is asked for explicitly)
        default = common.default_num_workers(made[0][0])
        assert pretrain.main(["--output-dir", str(cut), *argv, "--resume", "--dataloader-num-workers",
                              str(default)]) == 0
    assert default >= 1 and [w for d, w in made if d.transform.kind == "cifar"] == [2, default]
    whole, again = load_records(tmp_path / "whole" / "records"), load_records(cut / "records")
    assert whole.steps.tolist() == again.steps.tolist() == list(range(1, 21))
    assert np.array_equal(whole.msa, again.msa) and np.array_equal(whole.mlp, again.mlp)
    losses = lambda p: [(l["step"], l["loss"]) for l in read_jsonl(p / "metrics.jsonl") if l["type"] == "train"]  # noqa: E731
    assert losses(tmp_path / "whole") == losses(cut)
    assert read_json(tmp_path / "whole" / "results.json")["accuracy"] == read_json(cut / "results.json")["accuracy"]


@pytest.mark.parametrize("cpus,local,expected", [(2, 1, 1), (16, 1, 15), (16, 8, 1), (96, 8, 11), (128, 1, 16)])
def test_default_workers_share_the_cpus_of_the_node(monkeypatch, cpus, local, expected):
    class FromFiles:
        decodes_from_files = True

    monkeypatch.setattr(common.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert common.default_num_workers(FromFiles()) == expected
    assert common.default_num_workers(object()) == 0  # in memory


def test_digits_are_cached_and_read_back_identical(tmp_path, monkeypatch):
    """The first load builds the split and caches it; later loads read it into memory without scikit-learn and give
    bitwise the same data set; an unreadable cache is rebuilt."""
    from earlybird.data import digits

    def same(a, b):
        assert list(a) == list(b) and all(a[k].features == b[k].features for k in a)
        for name in a:
            assert a[name]["label"] == b[name]["label"]
            assert [im.tobytes() for im in a[name]["image"]] == [im.tobytes() for im in b[name]["image"]]

    built = digits.build_digits_dataset()
    first = digits.load_digits_dataset(tmp_path)
    assert digits.cache_path(tmp_path).is_dir()
    same(first, built)
    with monkeypatch.context() as patch:
        patch.setattr(digits, "build_digits_dataset", None)  # a build (and scikit-learn's import) would fail
        cached = digits.load_digits_dataset(tmp_path)
    same(cached, built)
    assert all(not split.cache_files for split in cached.values())  # in memory: no worker processes by default
    (digits.cache_path(tmp_path) / "dataset_dict.json").write_text("{")
    same(digits.load_digits_dataset(tmp_path), built)
    with monkeypatch.context() as patch:
        patch.setattr(digits, "build_digits_dataset", None)
        same(digits.load_digits_dataset(tmp_path), built)  # cached again


# --------------------------------------------------------------------------- uint8 batches, device normalisation, draft


def photo(width, height, seed=0):
    """A JPEG-like picture: smooth colour fields with a little grain (pure noise would not compress like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-12, 13, size=(height, width, 3)), 0, 255).astype(np.uint8))


def jpeg_bytes(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def opened(data: bytes):
    import io

    return Image.open(io.BytesIO(data))


def test_workers_ship_uint8_batches_that_the_device_normalises_as_before(tmp_path):
    """From files, through 2 worker processes: uint8 (batch, size, size, 3), a quarter of the float32 bytes; normalised
    after the copy they are bitwise the float32 batches of the per-image pipeline."""
    from torch.utils.data import DataLoader

    split = common.load_dataset_any(str(saved_digits(tmp_path, rows=32)))["train"]
    transform = images.ImageTransform("train", 8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ds = images.ImageClassificationDataset(split, "image", "label", transform, seed=1)
    sampler = [common.EpochIndices(list(range(b, b + 16)), 0) for b in (0, 16)]
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=images.collate_images, num_workers=2)
    for batch, indices in zip(loader, sampler):
        pixels = batch["pixel_values"]
        assert pixels.dtype == torch.uint8 and pixels.shape == (16, 8, 8, 3)
        assert pixels.untyped_storage().nbytes() == 16 * 8 * 8 * 3  # was 16 * 3 * 8 * 8 * 4 (float32)
        expected = torch.stack([reference_pipeline(split[i]["image"], transform, np.random.default_rng([1, 0, i]))
                                for i in indices])
        model_input = transform.on_device(batch, torch.float32)
        assert torch.equal(model_input["pixel_values"], expected) and model_input["labels"] is batch["labels"]


def test_normalise_in_the_model_dtype_is_the_float32_normalisation_cast():
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    float32 = images.normalise(pixels, mean, std)
    expected = (pixels.numpy().astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    assert torch.equal(float32, torch.from_numpy(expected.transpose(0, 3, 1, 2).copy()))
    bf16 = images.normalise(pixels, mean, std, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, float32.to(torch.bfloat16))


def test_the_digits_run_feeds_the_model_the_float_normalisation_of_the_split(tmp_path, monkeypatch):
    """The digits default end to end: every batch the model sees (training and evaluation) is float32 in the model's
    layout, each image bitwise the old CPU normalisation of one image of the split."""
    from transformers import ViTForImageClassification

    from test_training_support import load_script, one_thread

    dd = load_digits_dataset()
    known = {}
    for split in dd.values():
        for image in split["image"]:
            array = np.asarray(image, dtype=np.float32) / 255.0
            known[((array - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1).tobytes()] = True
    seen = []

    def capture(module, args, kwargs):
        seen.append(kwargs["pixel_values"].detach().clone())

    original = ViTForImageClassification.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.register_forward_pre_hook(capture, with_kwargs=True)

    monkeypatch.setattr(ViTForImageClassification, "__init__", init)
    pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
    with one_thread():
        assert pretrain.main(["--output-dir", str(tmp_path / "run"), "--num-layers", "1", "--hidden-size", "16",
                              "--num-heads", "2", "--intermediate-size", "16", "--max-steps", "2",
                              "--max-eval-samples", "40", "--disable-tqdm"]) == 0
    assert len(seen) >= 3  # 2 training steps and the evaluations
    for pixels in seen:
        assert pixels.dtype == torch.float32 and pixels.shape[1:] == (3, 8, 8) and pixels.is_contiguous()
        assert all(image.numpy().tobytes() in known for image in pixels)


def test_draft_keeps_at_least_the_target_pixels_in_every_crop():
    """A 2000x1500 JPEG at 224: a draft chosen for the image (the smallest scale still >= 224, here 1/4: 500x375) would
    leave RandomResizedCrop's small crops fewer than 224 pixels a side; the scale chosen for the crop never does, and
    still reduces the large ones."""
    data, size = jpeg_bytes(photo(2000, 1500)), 224
    naive = opened(data)
    naive.draft("RGB", (size, size))
    naive_factor = 2000 // naive.size[0]
    assert naive_factor == 4
    factors, too_small_for_naive = [], 0
    for seed in range(200):
        image = opened(data)
        box = images.crop_box(*image.size, np.random.default_rng(seed))
        image, reduced = images.draft_for_crop(image, box, size)
        factor = 2000 / image.size[0]
        factors.append(factor)
        assert reduced[2] - reduced[0] >= size and reduced[3] - reduced[1] >= size
        assert reduced[2] <= image.size[0] and reduced[3] <= image.size[1]
        assert np.allclose(np.asarray(reduced) * factor, box)
        too_small_for_naive += min(box[2] - box[0], box[3] - box[1]) / naive_factor < size
    assert too_small_for_naive > 0 and {1, 2, 4} <= set(factors)
    # an image already decoded, or not a JPEG, is left as it is
    for image in (Image.open(__import__("io").BytesIO(data)).copy(), photo(2000, 1500)):
        assert images.draft_for_crop(image, (0, 0, 2000, 1500), size) == (image, (0, 0, 2000, 1500))


def test_drafted_crops_are_the_full_decode_ones_within_a_few_levels(tmp_path, monkeypatch):
    """Through the dataset (imagefolder of large JPEGs, read undecoded): draft is called, the train and eval outputs
    keep their size, and they differ from the full decode's by less than 2 levels of 255 on average (DCT scaling
    instead of bilinear averaging). A JPEG too small to reduce gives bitwise the full decode's pixels."""
    from PIL import JpegImagePlugin

    for split in ("train", "validation"):
        for i, (width, height) in enumerate([(2000, 1500), (1400, 1900), (500, 375)]):
            folder = tmp_path / "folder" / split / "ab"[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(jpeg_bytes(photo(width, height, seed=i)))
    dd = common.load_dataset_any(str(tmp_path / "folder"), cache_dir=str(tmp_path / "cache"), builder="imagefolder")
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: drafts.append(size) or original(self, mode, size))
    for kind, split in (("train", "train"), ("eval", "validation")):
        transform = images.ImageTransform(kind, 224, (0.5,) * 3, (0.5,) * 3)
        ds = images.ImageClassificationDataset(dd[split], "image", "label", transform, seed=5)
        assert ds.decodes_from_files
        rows = sorted(range(3), key=lambda i: dd[split][i]["image"].size[0])[::-1]  # 2000, 1400, 500 wide
        drafts.clear()
        for epoch in range(4 if kind == "train" else 1):
            pixels = ds.__getitems__(common.EpochIndices(rows, epoch))["pixel_values"]
            assert pixels.shape == (3, 224, 224, 3) and pixels.dtype == torch.uint8
            decoded = [np.asarray(dd[split][i]["image"]) for i in rows]  # datasets' full decode
            full = transform.batch(decoded, [np.random.default_rng([5, epoch, i]) for i in rows])
            difference = (pixels.float() - full.float()).abs().mean(dim=(1, 2, 3))
            assert (difference < 2.0).all(), difference
            assert torch.equal(pixels[2], full[2])  # 500x375: no crop of it can be reduced
        if kind == "eval":  # shorter sides 1500 and 1400 over 224: 6.7 and 6.2, both decoded at 1/4
            assert drafts == [(500, 375), (350, 475)]
        else:  # 12 crops: some reduced (only the large images' crops can be)
            assert drafts and all(size[0] in (1000, 500, 700, 350) for size in drafts)
