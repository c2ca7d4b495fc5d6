"""PACE's metrics of concept explanations, plus concept recovery against ground truth.

- faithfulness ↑: held-out accuracy of a logistic regression from θ_m to the model's predicted label;
- stability ↓:    mean ‖θ_m − θ'_m‖₂ / ‖θ_m‖₂, θ' from an augmented view of the image;
- sparsity ↑:     mean over images of (1/K) Σ_k 1[θ_mk < 0.1 / K];
- parsimony ↓:    K;
- recovery:       NMI / ARI between each patch's most likely concept and its true label.
"""
from __future__ import annotations

import numpy as np


def sparsity(theta: np.ndarray, scale: float = 0.1) -> float:
    """Mean over images of the share of concepts with θ_mk < scale / K. ``theta`` (M, K)."""
    T = np.asarray(theta, dtype=np.float64)
    if T.ndim != 2 or T.size == 0:
        raise ValueError(f"theta must be (n_images, n_concepts); got shape {T.shape}")
    K = T.shape[1]
    return float((scale / K > T).mean(1).mean())


def stability(theta: np.ndarray, theta_aug: np.ndarray) -> float:
    """Mean relative change ‖θ − θ'‖₂ / ‖θ‖₂ over images (θ' of augmented views, same shape)."""
    T = np.asarray(theta, dtype=np.float64)
    T2 = np.asarray(theta_aug, dtype=np.float64)
    if T.shape != T2.shape or T.ndim != 2:
        raise ValueError(f"theta and theta_aug must both be (n_images, n_concepts); got {T.shape} and {T2.shape}")
    num = np.linalg.norm(T - T2, axis=1)
    den = np.maximum(np.linalg.norm(T, axis=1), 1e-12)
    return float((num / den).mean())


def faithfulness(theta: np.ndarray, labels, *, n_splits: int = 5, random_state: int = 0) -> float | None:
    """Held-out accuracy of ``LogisticRegression`` from θ (M, K) to the predicted labels (M,).

    Stratified ``n_splits``-fold cross-validation (fewer folds when a class is rarer); every image is
    predicted once by a model that did not see it. None when fewer than 2 classes (nothing to predict).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    T = np.asarray(theta, dtype=np.float64)
    y = np.asarray(labels)
    if T.ndim != 2 or len(T) != len(y):
        raise ValueError(f"theta (n, K) and labels (n,) must have the same n; got {T.shape} and {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return None
    k = int(min(n_splits, counts.min()))
    if k >= 2:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
    else:  # a class with one image: plain folds (that image is predicted by a model without its class)
        cv = KFold(n_splits=int(min(n_splits, len(y))), shuffle=True, random_state=random_state)
    clf = LogisticRegression(max_iter=2000, C=100.0)
    try:
        pred = cross_val_predict(clf, T, y, cv=cv)
    except ValueError:  # a training fold with a single class
        return None
    return float((pred == y).mean())


def recovery(patch_concepts, truth) -> dict[str, float]:
    """NMI and ARI (scikit-learn) between patch concepts and true patch labels (flat or (M, J))."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a = np.asarray(patch_concepts).ravel()
    b = np.asarray(truth).ravel().astype(str)
    if a.shape != b.shape:
        raise ValueError(f"patch_concepts and truth must have the same size; got {a.size} and {b.size}")
    return {"nmi": float(normalized_mutual_info_score(b, a)), "ari": float(adjusted_rand_score(b, a))}


def augmentation(*, crop_scale: tuple[float, float] = (0.8, 1.0), jitter: float = 0.1,
                 blur_sigma: tuple[float, float] = (0.1, 1.0)):
    """A random view of a PIL image for the stability metric (torchvision.transforms.v2), same size out:
    horizontal flip (p = 0.5), resized crop (``crop_scale`` of the area), small brightness / contrast /
    saturation jitter (hue kept: colour is a concept here), Gaussian blur (3×3, ``blur_sigma``).

    Draws from torch's global generator: seed it (``torch.manual_seed``) for repeatable views.
    """
    from torchvision.transforms import v2

    def build(size):
        return v2.Compose([
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomResizedCrop(size, scale=crop_scale, ratio=(0.9, 1.1), antialias=True),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.0),
            v2.GaussianBlur(kernel_size=3, sigma=blur_sigma),
        ])

    cache: dict = {}

    def view(image):
        size = (image.height, image.width)
        if size not in cache:
            cache[size] = build(size)
        return cache[size](image)

    return view
