"""Image loading per worker core: earlybird's pipeline against torchvision's steps, on the same JPEGs, alternated.

The bench writes its own imagefolder of JPEGs (quality 90; smooth colour fields with grain, which compress like
photographs, not like noise): ImageNet-sized ones (500x375) and large ones (1600x1200, where JPEG draft can act).
Each variant makes the same batches from them, in one process with one thread -- what one DataLoader worker does:

* **reference**: torchvision's ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize,
  written plainly with PIL as torchvision runs them on PIL images (torchvision does not load with this CPU torch):
  `Image.open(path).convert("RGB")`, the crop parameters from torch's generator with torchvision's exact sampling,
  `crop` then `resize` (bilinear), `transpose` to flip, a float32 tensor divided by 255, `sub_(mean).div_(std)`, and
  `default_collate` -- float32 (batch, 3, 224, 224). For eval: `resize` of the shorter side, `center_crop`.
* **earlybird**: `ImageClassificationDataset.__getitems__` over the same folder read by `datasets` (imagefolder):
  undecoded cells, the crop drawn from the image's size, JPEG draft to the DCT scale the crop allows, one resize,
  uint8 (batch, 224, 224, 3) -- the training loop normalises it on the device.
* **earlybird, no draft**: the same with draft off, to show what draft adds.

Rounds alternate the variants (reference, earlybird, no draft; then reversed); each round times one pass over all
the images in CPU time of the process (one thread: the time of one worker core; wall time on a shared machine also
counts the waits for a core). The speed-up of a round is the reference's time over the variant's; the table gives
their geometric mean with a 95% t-interval. Bytes per batch are those of the tensors a worker hands over (through
shared memory).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchlib import emit, make_parser, set_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from earlybird.data import common, images  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ViT-Base's image processor (ImageNet)
# (name, (width, height), share of --images): a third as many large ones (each costs ~10x to decode in full)
SETS = (("ImageNet-sized 500x375", (500, 375), 1.0), ("large 1600x1200", (1600, 1200), 1 / 3))


def photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields (bicubic upsampling of a coarse grid) with a little grain: structure, not pure noise."""
    cells = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(cells).resize((width, height), Image.BICUBIC)).astype(np.int16)
    grain = rng.integers(-10, 11, size=(height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def make_folder(path: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    """imagefolder train/<class>/<n>.jpg of `count` JPEGs (quality 90) in 4 classes, some of them portrait."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = path / "train" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = size if i % 3 else size[::-1]
        photo(width, height, rng).save(folder / f"{i}.jpg", quality=90)
    return path


# --------------------------------------------------------------------------- torchvision's steps, plainly


def torchvision_crop_params(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision.transforms.RandomResizedCrop.get_params, line for line: (top, left, height, width)."""
    import math

    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def reference_item(path: str, kind: str, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    with open(path, "rb") as f:  # torchvision.datasets.folder.pil_loader
        image = Image.open(f).convert("RGB")
    if kind == "train":
        top, left, h, w = torchvision_crop_params(*image.size)
        image = image.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
    else:  # Resize(size) (the shorter side) + CenterCrop(size)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        image = image.resize((size, new_long) if width <= height else (new_long, size), Image.BILINEAR)
        left, top = int(round((image.width - size) / 2.0)), int(round((image.height - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(size, size, 3).permute(2, 0, 1)
    return pixels.contiguous().to(torch.float32).div(255).sub_(mean).div_(std)  # ToTensor + Normalize


def reference_batches(paths: list[str], labels: list[int], kind: str, batch: int, size: int):
    from torch.utils.data import default_collate

    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (MEAN, STD))
    for start in range(0, len(paths), batch):
        rows = range(start, min(start + batch, len(paths)))
        yield default_collate([{"pixel_values": reference_item(paths[i], kind, size, mean, std), "labels": labels[i]}
                               for i in rows])


def earlybird_batches(dataset, batch: int, epoch: int):
    for start in range(0, len(dataset), batch):
        yield dataset.__getitems__(common.EpochIndices(range(start, min(start + batch, len(dataset))), epoch))


# --------------------------------------------------------------------------- measurement


def measure_set(folder: Path, cache: Path, kind: str, rounds: int, batch: int, size: int) -> dict:
    split = common.load_dataset_any(str(folder), cache_dir=str(cache), builder="imagefolder")["train"]
    transform = images.ImageTransform(kind, size, MEAN, STD)
    dataset = images.ImageClassificationDataset(split, "image", "label", transform, seed=0)
    stored = dataset.dataset[:]["image"]  # the undecoded cells: the same files, in the same order, for the reference
    paths, labels = [cell["path"] for cell in stored], dataset.labels.tolist()
    draft_factors = images.DRAFT_FACTORS

    def run(variant: str, epoch: int) -> tuple[float, dict]:
        images.DRAFT_FACTORS = () if variant == "earlybird, no draft" else draft_factors
        batches = reference_batches(paths, labels, kind, batch, size) if variant == "reference" else \
            earlybird_batches(dataset, batch, epoch)
        start = time.process_time()  # this process's CPU time: a worker core's, whatever else shares the machine
        first = None
        for out in batches:
            first = first or out
        return time.process_time() - start, first

    variants = ("reference", "earlybird", "earlybird, no draft")
    seconds = {v: [] for v in variants}
    firsts = {}
    run("earlybird", 0)  # warm-up: file cache, imports, allocator
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            elapsed, first = run(variant, r)
            seconds[variant].append(elapsed)
            firsts[variant] = first
    images.DRAFT_FACTORS = draft_factors
    return {"n": len(paths), "seconds": seconds, "bytes": {v: firsts[v]["pixel_values"].untyped_storage().nbytes()
                                                           for v in variants},
            "dtype": {v: str(firsts[v]["pixel_values"].dtype).replace("torch.", "") for v in variants},
            "batch": len(firsts["reference"]["pixel_values"]), "drafted": drafted_share(dataset, kind, size)}


def drafted_share(dataset, kind: str, size: int) -> float:
    """The share of the images whose crop (epoch 0's draws) is decoded at a reduced DCT scale."""
    reduced = 0
    for i, cell in enumerate(dataset.dataset[:]["image"]):
        image = images.open_image(cell)
        if kind == "train":
            box = images.crop_box(*image.size, np.random.default_rng([dataset.seed, 0, i]))
        else:
            box = (0, 0, *image.size)
        reduced += images.draft_for_crop(image, box, size)[1] != box
    return reduced / len(dataset)


def interval_text(ratios: list[float]) -> tuple[str, str]:
    if len(ratios) < 2:
        return f"{ratios[0]:.2f}", "-"
    from slimming_overhead import interval

    mean, low, high = interval(ratios)
    return f"{mean:.2f}", f"{low:.2f} - {high:.2f}"


def report(results: dict, args) -> str:
    from PIL import features

    turbo = "with" if features.check_feature("libjpeg_turbo") else "without"
    lines = [
        f"Image loading per worker core (one process, one thread; torch {torch.__version__}, Pillow "
        f"{Image.__version__} {turbo} libjpeg-turbo; {os.cpu_count()} CPUs here, shared): {args.rounds} rounds "
        f"alternating the variants, each a pass over all the images of a set, batch {args.batch}, "
        f"{args.size}x{args.size} out.",
        "",
        "| images | transform | variant | images / CPU-s (median of rounds) | speed-up over reference (geometric mean) "
        "| 95% interval | out per batch | drafted crops |",
        "|---|---|---|---:|---:|---|---|---:|",
    ]
    for (name, kind), res in results.items():
        ref = res["seconds"]["reference"]
        for variant, secs in res["seconds"].items():
            rate = res["n"] / statistics.median(secs)
            mb = res["bytes"][variant] / 1e6
            drafted = f"{100 * res['drafted']:.0f}%" if variant == "earlybird" else "-"
            if variant == "reference":
                speed, band = "1.00", "-"
            else:
                speed, band = interval_text([r / s for r, s in zip(ref, secs)])
            lines.append(f"| {name} ({res['n']}) | {kind} | {variant} | {rate:.0f} | {speed} | {band} | "
                         f"{res['dtype'][variant]}, {mb:.2f} MB | {drafted} |")
    batch_floats = 4 * 3 * args.size * args.size
    lines += [
        "",
        f"Shared memory a DataLoader holds (a worker's batches in flight: prefetch_factor 2 per worker), at batch 128 "
        f"per GPU, {args.size}x{args.size}:",
        "",
        "| workers per GPU x GPUs | float32 batches (before) | uint8 batches (now) |",
        "|---|---:|---:|",
    ]
    for workers, gpus in ((8, 1), (8, 8), (12, 8)):
        batches = workers * 2 * gpus
        lines.append(f"| {workers} x {gpus} | {batches * 128 * batch_floats / 1e9:.2f} GB | "
                     f"{batches * 128 * batch_floats / 4 / 1e9:.2f} GB |")
    lines += [
        "",
        f"- Docker's default `/dev/shm` is 64 MB; one batch of 128 is {128 * batch_floats / 1e6:.0f} MB in float32 and "
        f"{128 * batch_floats / 4 / 1e6:.0f} MB in uint8: give the container `--shm-size` at least the uint8 figure "
        "above for its GPUs, with room to spare.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = make_parser(__doc__, "8 images per set (500x375, 640x480), 64x64 out, batch 4, 2 rounds")
    parser.add_argument("--images", type=int, default=None,
                        help="ImageNet-sized JPEGs (default 600, and a third as many large ones; quick 8 of each)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 6; quick 2)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 64; quick 4)")
    parser.add_argument("--size", type=int, default=None, help="output side (default 224; quick 64)")
    parser.add_argument("--dir", default=None, help="where to write the JPEGs (default a temporary directory)")
    args = parser.parse_args(argv)
    args.threads = args.threads or 1  # one thread: a DataLoader worker's
    set_threads(args)
    args.images = args.images or (8 if args.quick else 600)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.batch = args.batch or (4 if args.quick else 64)
    args.size = args.size or (64 if args.quick else 224)
    sets = (("ImageNet-sized 500x375", (500, 375), 1.0), ("large 640x480", (640, 480), 1.0)) if args.quick else SETS
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="eb-images-") as tmp:
        for s, (name, size, share) in enumerate(sets):
            folder = make_folder(Path(tmp) / f"set{s}", max(args.batch, round(share * args.images)), size, seed=s)
            for kind in ("train", "eval"):
                print(f"{name}: {kind}", file=sys.stderr, flush=True)
                results[(name, kind)] = measure_set(folder, Path(tmp) / "cache", kind, args.rounds, args.batch,
                                                    args.size)
    return emit(report(results, args), args)


if __name__ == "__main__":
    sys.exit(main())
