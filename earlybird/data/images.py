"""Image classification data: loading (hub, imagefolder, save_to_disk, digits), splits and transforms.

torchvision has no CPU build here, so the transforms are written with PIL and numpy. Every random
transform takes a `numpy.random.Generator`; the training dataset seeds one per (seed, epoch, example),
so augmentations do not depend on worker processes or on where a resumed run starts.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..errors import EarlyBirdError
from .common import find_column, load_dataset_any, resolve_splits, subset  # noqa: F401 (re-exported)

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def label_names(dataset, label_column: str, where: str | None = None) -> list[str]:
    import datasets

    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    from .common import label_values

    values = label_values(dataset, label_column)
    if values.dtype.kind not in "iu" or (values < 0).any():
        bad = values[values < 0][:5].tolist() if values.dtype.kind in "iu" else values[:5].tolist()
        raise EarlyBirdError(f"{where + ': ' if where else ''}column {label_column!r} must hold class indices 0..C-1; "
                             f"got {bad}")
    return [str(i) for i in range(int(values.max()) + 1)]


# --------------------------------------------------------------------------- transforms


def to_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict) and "bytes" in image:
        import io

        return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def to_tensor(image: Image.Image, mean, std) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def random_resized_crop(image, rng, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop: a random area and aspect ratio, resized to size x size."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    # Fallback: the largest central crop within the ratio bounds.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def resize_center_crop(image, size: int):
    """Resize the shorter side to `size`, then crop the centre size x size."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def random_crop_with_padding(image, rng, size: int, padding: int):
    """CIFAR-style: resize to size if needed, zero-pad by `padding`, take a random size x size crop."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    if padding <= 0:
        return image
    padded = Image.new("RGB", (size + 2 * padding, size + 2 * padding))
    padded.paste(image, (padding, padding))
    left, top = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
    return padded.crop((left, top, left + size, top + size))


def _affine(image, matrix):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.NEAREST, fillcolor=(0, 0, 0))


# RandAugment-lite: (name, op(image, m)) with m in [-1, 1] the signed magnitude.
_RANDAUG_OPS = (
    ("identity", lambda im, m: im),
    ("autocontrast", lambda im, m: ImageOps.autocontrast(im)),
    ("equalize", lambda im, m: ImageOps.equalize(im)),
    ("rotate", lambda im, m: im.rotate(30.0 * m, resample=Image.NEAREST, fillcolor=(0, 0, 0))),
    ("solarize", lambda im, m: ImageOps.solarize(im, int(256 - 256 * abs(m)))),
    ("posterize", lambda im, m: ImageOps.posterize(im, max(1, int(8 - 4 * abs(m))))),
    ("color", lambda im, m: ImageEnhance.Color(im).enhance(1.0 + 0.9 * m)),
    ("contrast", lambda im, m: ImageEnhance.Contrast(im).enhance(1.0 + 0.9 * m)),
    ("brightness", lambda im, m: ImageEnhance.Brightness(im).enhance(1.0 + 0.9 * m)),
    ("sharpness", lambda im, m: ImageEnhance.Sharpness(im).enhance(1.0 + 0.9 * m)),
    ("shear_x", lambda im, m: _affine(im, (1, 0.3 * m, 0, 0, 1, 0))),
    ("shear_y", lambda im, m: _affine(im, (1, 0, 0, 0.3 * m, 1, 0))),
    ("translate_x", lambda im, m: _affine(im, (1, 0, 0.33 * m * im.size[0], 0, 1, 0))),
    ("translate_y", lambda im, m: _affine(im, (1, 0, 0, 0, 1, 0.33 * m * im.size[1]))),
)


def rand_augment(image, rng, num_ops: int = 2, magnitude: int = 9):
    """RandAugment (Cubuk et al., 2020) reduced to PIL ops: `num_ops` random ops at magnitude/10, random sign."""
    for _ in range(num_ops):
        _, op = _RANDAUG_OPS[int(rng.integers(len(_RANDAUG_OPS)))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        image = op(image, sign * magnitude / 10.0)
    return image


class ImageTransform:
    """train (RandomResizedCrop + flip), eval (resize + centre crop), or cifar (pad-crop, flip, RandAugment)."""

    def __init__(self, kind: str, size: int, mean, std, *, padding: int = 4, flip: bool = True,
                 randaug_ops: int = 2, randaug_magnitude: int = 9):
        if kind not in ("train", "eval", "cifar"):
            raise EarlyBirdError(f"unknown transform {kind!r}")
        self.kind, self.size, self.mean, self.std = kind, int(size), tuple(mean), tuple(std)
        self.padding, self.flip = padding, flip
        self.randaug_ops, self.randaug_magnitude = randaug_ops, randaug_magnitude

    def __call__(self, image, rng: np.random.Generator | None = None) -> torch.Tensor:
        image = to_pil(image)
        if self.kind == "eval":
            image = resize_center_crop(image, self.size)
        elif self.kind == "train":
            image = random_resized_crop(image, rng, self.size)
            if self.flip and rng.random() < 0.5:
                image = ImageOps.mirror(image)
        else:
            image = random_crop_with_padding(image, rng, self.size, self.padding)
            if self.flip and rng.random() < 0.5:
                image = ImageOps.mirror(image)
            if self.randaug_ops:
                image = rand_augment(image, rng, self.randaug_ops, self.randaug_magnitude)
        return to_tensor(image, self.mean, self.std)


class ImageClassificationDataset(torch.utils.data.Dataset):
    """(pixel_values, labels) from a datasets split; training augmentations seeded per (seed, epoch, index)."""

    def __init__(self, dataset, image_column: str, label_column: str, transform: ImageTransform, seed: int = 0):
        self.dataset, self.image_column, self.label_column = dataset, image_column, label_column
        self.transform, self.seed, self.epoch = transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        example = self.dataset[int(index)]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return {"pixel_values": self.transform(example[self.image_column], rng),
                "labels": int(example[self.label_column])}


def collate_images(examples) -> dict:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long)}


def image_settings(model_name_or_path: str | None, config) -> tuple[int, tuple, tuple]:
    """(size, mean, std): the model's image processor when it has one, else config.image_size and 0.5 / 0.5."""
    size, mean, std = int(config.image_size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if model_name_or_path is None:
        return size, mean, std
    from transformers import AutoImageProcessor
    from transformers.utils import IMAGE_PROCESSOR_NAME, cached_file

    found = cached_file(model_name_or_path, IMAGE_PROCESSOR_NAME, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    if found is None:  # the model ships no image processor: its config's size, and ViT's 0.5 / 0.5 normalisation
        print(f"note: {model_name_or_path} has no {IMAGE_PROCESSOR_NAME}: images are resized to {size}x{size} and "
              "normalised with mean 0.5, std 0.5", file=sys.stderr, flush=True)
        return size, mean, std
    try:
        processor = AutoImageProcessor.from_pretrained(model_name_or_path)
    except Exception as err:  # a corrupt or foreign preprocessor_config.json: say so rather than guess
        raise EarlyBirdError(f"--model-name-or-path {model_name_or_path}: cannot load its image processor ({found}): "
                             f"{' '.join(str(err).split())[:200]}") from None
    proc_size = getattr(processor, "size", None) or {}
    get = proc_size.get if isinstance(proc_size, dict) else lambda k: getattr(proc_size, k, None)
    size = get("height") or get("shortest_edge") or size
    mean = tuple(getattr(processor, "image_mean", None) or mean)
    std = tuple(getattr(processor, "image_std", None) or std)
    return int(size), mean, std
