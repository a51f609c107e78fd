"""The embedded default data set: scikit-learn's bundled digits (no download, so everything runs offline).

1797 grayscale 8x8 images of the digits 0-9 (pixel values 0-16), as RGB PIL images in a
`datasets.DatasetDict` with a fixed stratified train / validation / test split -- the same
columns (`image`, `label`) as any image data set, so it goes through the same pipeline.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 0  # fixed: the split never depends on --seed, so runs with different seeds compare
VALIDATION_SIZE = 300
TEST_SIZE = 300


def load_digits_dataset():
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    train, validation = train_test_split(rest, test_size=VALIDATION_SIZE, stratify=labels[rest],
                                         random_state=SPLIT_SEED)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})

    def split(rows):
        rows = np.sort(rows)
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(images[i]).convert("RGB") for i in rows], "label": labels[rows].tolist()},
            features=features)

    return datasets.DatasetDict({"train": split(train), "validation": split(validation), "test": split(test)})
