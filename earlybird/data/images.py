"""Image classification data: loading (hub, imagefolder, save_to_disk, digits), splits and transforms.

torchvision has no CPU build here, so the transforms are written with PIL and numpy; a batch leaves the
workers as uint8 and is normalised at once in torch, on the device. Every random transform takes a
`numpy.random.Generator`; the training dataset seeds one per (seed, epoch, example), so augmentations do
not depend on worker processes, on how examples are batched, or on where a resumed run starts.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import torch
from PIL import ExifTags, Image, ImageEnhance, ImageOps

from ..errors import EarlyBirdError
from .common import find_column, label_values, load_dataset_any, resolve_splits, subset  # noqa: F401 (re-exported)

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def label_names(dataset, label_column: str, where: str | None = None) -> list[str]:
    import datasets

    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = label_values(dataset, label_column)
    if values.dtype.kind not in "iu" or (values < 0).any():
        bad = values[values < 0][:5].tolist() if values.dtype.kind in "iu" else values[:5].tolist()
        raise EarlyBirdError(f"{where + ': ' if where else ''}column {label_column!r} must hold class indices 0..C-1; "
                             f"got {bad}")
    return [str(i) for i in range(int(values.max()) + 1)]


# --------------------------------------------------------------------------- transforms

# JPEG's DCT scaling: libjpeg decodes at 1/2, 1/4 or 1/8 of the size for a fraction of the work (Image.draft)
DRAFT_FACTORS = (8, 4, 2)


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode, encoded bytes, a datasets file reference, or an array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")  # convert() to the same mode is a copy
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        return to_pil(oriented(open_image(image)))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def to_array(image) -> np.ndarray:
    """Any image (PIL of any mode, encoded bytes, an array) as uint8 (height, width, 3)."""
    return np.asarray(to_pil(image))


def open_image(stored: dict) -> Image.Image:
    """A datasets image cell read undecoded (`datasets.Image(decode=False)`: its bytes, else its local path), opened
    but not decoded: its size is known, and a JPEG can still be drafted."""
    import io

    return Image.open(io.BytesIO(stored["bytes"]) if stored.get("bytes") is not None else stored["path"])


def oriented(image: Image.Image) -> Image.Image:
    """The pixels turned as their EXIF orientation says (decoded), as datasets' own decoding gives them; an image
    stored upright is returned as it is (not yet decoded)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # 1: as stored
        return ImageOps.exif_transpose(image)
    return image


def draft_for_crop(image: Image.Image, box, size: int):
    """(image, box): a JPEG set to decode at the smallest DCT scale (1/2, 1/4, 1/8) at which the crop `box` (left,
    top, right, bottom, in the image's coordinates) still spans at least `size` x `size` pixels, and the box in the
    coordinates of that reduced image. Anything else (not a JPEG, already decoded, a crop too small to reduce) is
    returned as it is.

    The scale is chosen per crop, not per image: RandomResizedCrop's smallest crops (8% of the area) are smaller than
    224 pixels on an ImageNet-sized image, so one scale chosen for the image would upsample them from fewer pixels
    than the full decode has. Resizing the reduced crop to `size` then never upsamples what the full decode would
    have downsampled.
    """
    width, height = image.size
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    factor = next((f for f in DRAFT_FACTORS if min(crop_w, crop_h) / f >= size), 1)
    if factor == 1:
        return image, box
    # (W // f, H // f) makes draft choose exactly f: W // (W // f) lies in [f, 2f); its answer gives the scale it took
    drafted = image.draft("RGB", (width // factor, height // factor))
    if drafted is None:  # not a JPEG, or already decoded
        return image, box
    scale = round(width / drafted[1][2])
    return image, tuple(v / scale for v in box)


def normalise(pixels: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (batch, height, width, 3), on any device -> (x / 255 - mean) / std per channel, as (batch, 3, height,
    width) in `dtype`, on the same device.

    Computed in float32 and then cast: the same float32 operations, in the same order, as the per-image numpy
    arithmetic of the original pipeline -- bitwise the same values on the CPU (tests/test_data_images.py checks it).
    Every operand is a tensor on the pixels' device, so no kernel swaps a division by a scalar for a multiplication.
    """
    batch, height, width, _ = pixels.shape
    x = torch.empty(batch, 3, height, width, dtype=torch.float32, device=pixels.device)
    x.copy_(pixels.permute(0, 3, 1, 2))  # uint8 -> float32 and channels first, in one pass
    # in place, channels outermost: ~4x faster than broadcasting over a last dimension of 3
    full, mean, std = _normalisation_constants(tuple(mean), tuple(std), pixels.device)
    x.div_(full).sub_(mean).div_(std)
    return x if dtype == torch.float32 else x.to(dtype)


@functools.lru_cache(maxsize=8)
def _normalisation_constants(mean: tuple, std: tuple, device: torch.device) -> tuple:
    """255, mean and std as float32 (-1, 1, 1) tensors on `device`, made once (not a host-to-device copy per batch)."""
    return tuple(torch.tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1) for v in ((255.0,), mean, std))


def crop_box(width: int, height: int, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, right, bottom) of a random area and aspect ratio, or,
    after 10 draws that do not fit, the largest central crop within the ratio bounds. A function of the size alone:
    the image need not be decoded."""
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
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def random_resized_crop(image, rng, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop: a random area and aspect ratio, resized to size x size (bilinear). An image
    not yet decoded (a JPEG) is decoded only as far as the crop needs (`draft_for_crop`)."""
    image, box = draft_for_crop(image, crop_box(*image.size, rng, scale, ratio), size)
    return to_pil(image).resize((size, size), Image.BILINEAR, box=box)


def resize_center_crop(image, size: int):
    """Resize the shorter side to `size`, then crop the centre size x size. An image not yet decoded (a JPEG) is
    decoded at the smallest DCT scale whose shorter side is still at least `size`."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image, box = draft_for_crop(image, (0, 0, width, height), size)
    image = to_pil(image).resize((new_w, new_h), Image.BILINEAR, box=box)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def random_crop_with_padding(image: np.ndarray, rng, padding: int) -> np.ndarray:
    """CIFAR-style: zero-pad (height, width, 3) by `padding` and take a random crop of the original size."""
    if padding <= 0:
        return image
    height, width = image.shape[:2]
    left, top = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return padded[top:top + height, left:left + width]


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
    """train (RandomResizedCrop + flip), eval (resize + centre crop), or cifar (pad-crop, flip, RandAugment).

    `geometry` maps one image to uint8 (size, size, 3) -- resizing and RandAugment in PIL, crops and flips as array
    slices, a JPEG not yet decoded decoded only as far as its crop needs; `batch` stacks them into the uint8 batch
    that a worker process ships; `normalise` turns that into the model's input where it lands (on the device).
    """

    def __init__(self, kind: str, size: int, mean, std, *, padding: int = 4, flip: bool = True,
                 randaug_ops: int = 2, randaug_magnitude: int = 9):
        if kind not in ("train", "eval", "cifar"):
            raise EarlyBirdError(f"unknown transform {kind!r}")
        self.kind, self.size, self.mean, self.std = kind, int(size), tuple(mean), tuple(std)
        self.padding, self.flip = padding, flip
        self.randaug_ops, self.randaug_magnitude = randaug_ops, randaug_magnitude

    @property
    def random(self) -> bool:
        """Whether it draws random numbers (else it takes no generator, and none is made per example)."""
        cifar_random = self.padding > 0 or self.flip or self.randaug_ops > 0
        return self.kind == "train" or (self.kind == "cifar" and cifar_random)

    def geometry(self, image, rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 (size, size, 3) from a uint8 (height, width, 3) array or a PIL image (of any mode, maybe not yet
        decoded)."""
        size = self.size
        pil = image if isinstance(image, Image.Image) else None
        if self.kind == "eval":
            if (image.size if pil else image.shape[:2]) == (size, size):  # resize + centre crop: the image itself
                return to_array(image) if pil else image
            return np.asarray(resize_center_crop(pil or Image.fromarray(image), size))
        if self.kind == "train":
            image = np.asarray(random_resized_crop(pil or Image.fromarray(image), rng, size))
        else:
            if (image.size if pil else image.shape[:2]) != (size, size):
                image = np.asarray(to_pil(image).resize((size, size), Image.BILINEAR))
            elif pil:
                image = to_array(image)
            image = random_crop_with_padding(image, rng, self.padding)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        if self.kind == "cifar" and self.randaug_ops:
            image = np.asarray(rand_augment(Image.fromarray(np.ascontiguousarray(image)), rng, self.randaug_ops,
                                            self.randaug_magnitude))
        return image

    def batch(self, images, rngs=None) -> torch.Tensor:
        """uint8 (batch, size, size, 3) from images (a list, or one uint8 (batch, height, width, 3) tensor): what a
        worker process ships -- a quarter of the bytes of the float32 input (`normalise` makes that on the device)."""
        if isinstance(images, torch.Tensor) and not self.random and tuple(images.shape[1:3]) == (self.size,) * 2:
            return images  # nothing per image: the geometry is the identity
        rngs = rngs if rngs is not None else [None] * len(images)
        arrays = [self.geometry(image if isinstance(image, Image.Image) else np.asarray(image), rng)
                  for image, rng in zip(images, rngs)]
        return torch.from_numpy(np.stack(arrays))

    def normalise(self, pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The model's input from a uint8 batch, where the batch is: `normalise` with this transform's mean / std."""
        return normalise(pixels, self.mean, self.std, dtype)

    def on_device(self, batch: dict, dtype: torch.dtype = torch.float32) -> dict:
        """A batch moved to the device, its pixels normalised there in the model's dtype (`Task.prepare_batch`)."""
        return {**batch, "pixel_values": self.normalise(batch["pixel_values"], dtype)}

    def __call__(self, image, rng: np.random.Generator | None = None) -> torch.Tensor:
        """One image as the model takes it: float32 (3, size, size), normalised."""
        return self.normalise(self.batch([image], [rng]))[0]


class ImageClassificationDataset(torch.utils.data.Dataset):
    """(pixel_values, labels) from a datasets split; training augmentations seeded per (seed, epoch, index).

    `__getitems__(indices)`, which torch's DataLoader calls with a whole batch of indices, returns the collated batch:
    the labels from one column read, the images transformed one by one into one uint8 (batch, size, size, 3) tensor
    -- the training loop normalises it on the device (`ImageTransform.on_device`, `Task.prepare_batch`). A split held
    in memory (no Arrow files behind it: the digits default, `Dataset.from_dict`) is decoded once, here, to uint8
    arrays (one tensor when they all have one size), so a batch costs no decoding; a split read from files is read
    undecoded and decoded batch by batch, in the DataLoader's worker processes (`decodes_from_files`,
    `default_num_workers`), a JPEG only as far as its crop needs (`draft_for_crop`).
    The epoch of a batch is its indices' `epoch` (`common.EpochIndices`, from the training loop), else `self.epoch`.
    """

    def __init__(self, dataset, image_column: str, label_column: str, transform: ImageTransform, seed: int = 0):
        import datasets

        self.image_column, self.label_column = image_column, label_column
        self.transform, self.seed, self.epoch = transform, seed, 0
        self.labels = label_values(dataset, label_column).astype(np.int64)
        self.decodes_from_files = bool(getattr(dataset, "cache_files", None))
        if self.decodes_from_files and isinstance(dataset.features.get(image_column), datasets.Image):
            # the files' bytes, not datasets' full decode: a JPEG is then decoded at the scale its crop needs
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.dataset = dataset
        self._images = None if self.decodes_from_files else _decode_all(dataset[:][image_column])  # one read

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitems__(self, indices) -> dict:
        epoch = getattr(indices, "epoch", self.epoch)
        rows = [int(i) for i in indices]
        rngs = [np.random.default_rng([self.seed, epoch, i]) for i in rows] if self.transform.random else None
        if self._images is None:  # one read of the batch's rows, decoded here (in a worker process)
            images = [_opened(cell) for cell in self.dataset[rows][self.image_column]]
        elif isinstance(self._images, torch.Tensor):
            images = self._images[rows]
        else:
            images = [self._images[i] for i in rows]
        return {"pixel_values": self.transform.batch(images, rngs), "labels": torch.from_numpy(self.labels[rows])}

    def __getitem__(self, index):
        batch = self.__getitems__([index])
        return {"pixel_values": batch["pixel_values"][0], "labels": int(batch["labels"][0])}


def _opened(cell):
    """A cell of an image column read from files: opened, not decoded, when it is a file reference; a PIL image as it
    is; anything else (arrays) as uint8 pixels."""
    if isinstance(cell, dict):
        return oriented(open_image(cell))
    return cell if isinstance(cell, Image.Image) else to_array(cell)


def _decode_all(column):
    """uint8 (n, height, width, 3) when every image has one size, else a list of (height, width, 3) arrays."""
    arrays = [to_array(image) for image in column]
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return torch.from_numpy(np.stack(arrays))
    return arrays


def collate_images(examples) -> dict:
    """A batch from `ImageClassificationDataset.__getitems__` as it is, or examples (dicts) stacked."""
    if isinstance(examples, dict):
        return examples
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
