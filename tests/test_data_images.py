"""Image data: the PIL/numpy transforms, seeded augmentation, the digits default, loading and splits."""

import numpy as np
import pytest
import torch
from PIL import Image

from earlybird.data import common, images
from earlybird.data.digits import load_digits_dataset
from earlybird.errors import EarlyBirdError
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
        assert images.random_crop_with_padding(picture(8, 8), rng, 8, 2).size == (8, 8)


def test_dataset_seeds_augmentation_per_epoch_and_example():
    dd = load_digits_dataset()
    transform = images.ImageTransform("cifar", 8, (0.5,) * 3, (0.5,) * 3, padding=1)
    ds = images.ImageClassificationDataset(dd["train"], "image", "label", transform, seed=3)
    first = ds[5]["pixel_values"]
    assert torch.equal(first, ds[5]["pixel_values"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[5]["pixel_values"])
    batch = images.collate_images([ds[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["labels"].dtype == torch.long


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
