"""PACE: probabilistic concept explanations of ViT patch embeddings (variational EM).

Wang, Tan & Wang, "Probabilistic Conceptual Explainers: Trustworthy Conceptual Explanations for Vision
Foundation Models", ICML 2024. The model is an LDA with Gaussian "topics" (concepts) over the patch
embeddings of each image:

- θ_m ~ Dirichlet(α)                       image-level concept proportions (K concepts)
- z_mj ~ Categorical(θ_m)                  concept of patch j
- e_mj ~ N(μ_z, Σ_z)                       patch embedding, counted with weight w_mj = J · a_mj
- ỹ_m ~ softmax(Hᵀ z̄_m)                   the model's prediction is explained by the concept mix

Mean-field variational EM with q(θ_m | γ_m) Π_j q(z_mj | φ_mj):

E-step (per image, ``e_steps`` fixed-point iterations)::

    log φ_mjk = ψ(γ_mk) − ψ(Σ_k γ_mk) + w_mj · log N(e_mj | μ_k, Σ_k) + (λ / J) · [H ỹ_m − H softmax(Hᵀ φ̄_m)]_k
    γ_mk      = α_k + Σ_j w_mj φ_mjk

M-step: μ_k, Σ_k are the w·φ-weighted moments (Σ_k diagonal, or full with shrinkage towards a scaled
identity; both floored by ``reg_covar`` times the mean variance), H takes ``h_steps`` gradient steps on
Σ_m ỹ_mᵀ log softmax(Hᵀ φ̄_m) − ½ h_l2 ‖H‖².

Choices (docs/concepts.md describes the method and its measurements):

- the attention weight multiplies the whole Gaussian log-density (log-determinant included): the patch
  likelihood is counted w_mj times, as the generative story says. Weighting only the Mahalanobis term
  would make every low-attention patch fall into the tightest concept whatever it shows;
- w_mj = J · a_mj (mean 1 per image), so γ counts patches like an ordinary LDA counts words;
- the fit runs in a PCA space of the tokens (``n_components``), initialised by k-means on a sample of
  reduced patches (unweighted: it should cover every kind of patch); a concept that ends up with no
  attention-weighted mass (e.g. one that k-means put on unattended patches) takes half of the broadest
  concept, split along its main axis; full-dimension prototypes (``prototypes_``) are kept for naming.
"""
from __future__ import annotations

import contextlib
import logging
import time
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import not_fitted_getattr
from ..params import Interval, Options, validate
from ..progress import Progress

log = logging.getLogger(__name__)

COVARIANCES = ("isotropic", "tied", "full", "diag")


__getattr__ = not_fitted_getattr(__name__)  # NotFittedError (a PACE model used before ``fit``): scikit-learn's


def _one_blas_thread():
    """The GEMMs here are tall and skinny: one BLAS thread is faster than waking a pool for each, and
    much faster on a busy machine (measured 3x on 2 shared cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _tdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """aᵀ b for tall a, b (n ≫ columns). OpenBLAS is slow on a transposed tall operand, so copy it first."""
    return np.ascontiguousarray(a.T) @ b


def _softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    s = s - s.max(axis=axis, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=axis, keepdims=True)
    return s


def as_predictions(predictions, n: int) -> np.ndarray | None:
    """Predictions as (n, C) float probabilities: given as probabilities, or as integer class labels."""
    if predictions is None:
        return None
    p = np.asarray(predictions)
    if p.ndim == 1:
        if len(p) != n:
            raise ValueError(f"predictions must have one entry per image ({n}); got {len(p)}")
        if not np.issubdtype(p.dtype, np.integer):
            raise ValueError("1-D predictions must be integer class labels (0..C-1); use pd.factorize for names")
        if p.min() < 0:
            raise ValueError("class labels must be >= 0")
        out = np.zeros((n, int(p.max()) + 1), np.float64)
        out[np.arange(n), p] = 1.0
        return out
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"predictions must be (n_images={n}, n_classes) probabilities; got shape {p.shape}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("predictions must be finite, non-negative probabilities")
    s = p.sum(1, keepdims=True)
    if (s <= 0).any():
        raise ValueError("every row of predictions needs a positive sum")
    return p / s


class PACE(BaseEstimator):
    """Probabilistic concept explainer over patch embeddings (a scikit-learn estimator: ``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work).

    Parameters
    ----------
    n_concepts : K, number of concepts.
    alpha : Dirichlet prior of θ (scalar or (K,)); < 1 gives sparse image-level proportions.
    n_components : PCA dimensions the mixture is fitted in (capped at the token width).
    max_iter : EM iterations; ``tol``: stop when θ changes by less than this (max abs) between iterations.
    e_steps : fixed-point iterations of (φ, γ) per E-step.
    pred_weight : λ, weight of the prediction term (0 switches it off; ignored without predictions).
    h_steps, h_lr, h_l2 : gradient steps, step size and L2 penalty of the prediction weights H per M-step.
    covariance : ``"diag"``, ``"full"``, ``"tied"`` (one full Σ shared by all concepts: the pooled
        within-concept covariance, as in scikit-learn's GaussianMixture) or ``"isotropic"`` (one σ²·I shared
        by all concepts, σ² the pooled within-concept variance per dimension: Euclidean geometry of the
        reduced space, the limit of ``"tied"`` at shrinkage 1); ``shrinkage`` (full and tied) pulls Σ towards
        tr(Σ)/D · I.
    reg_covar : variance floor, relative to the mean variance of the reduced patches.
    use_attention : weight patches by J · attention (False: every patch counts 1).
    temperature : the Gaussian log-likelihood is divided by this in the E-step (1 = the paper's equations).
        Larger values let the Dirichlet prior α speak: an image's patches gather in fewer concepts (sparser
        θ). The authors' reference code divides the Mahalanobis term by 100.
    n_init : EM runs from different k-means starts; the one with the highest ``score_`` is kept (as
        scikit-learn's GaussianMixture does with its lower bound).
    init_sample, pca_sample : at most this many patches for the k-means initialisation / the PCA fit.
    random_state : seed of the samples and of k-means.

    The allowed values of every parameter are declared once, in :attr:`parameter_constraints`
    (:mod:`core.params`); ``fit`` checks them (and that ``n_concepts`` does not exceed the number of
    patches, and a per-concept ``alpha`` has one value per concept). The CLI's ``concepts`` options and the
    Concepts page's widgets read their bounds from there.

    Learned attributes: ``components_`` (D, d) PCA axes, ``mean_`` (d,), ``concepts_`` (K, D) means in PCA
    space, ``covariances_`` ((K, D) or (K, D, D)), ``prototypes_`` (K, d) full-dimension means,
    ``shares_`` (K,) weighted share of the training patches, ``coef_`` H (K, C) or None, ``theta_`` (M, K)
    and ``phi_`` (M, J, K) of the training images, ``n_iter_``, ``converged_``, ``fit_seconds_``,
    ``score_`` (attention-weighted mean log-likelihood of the patches under their image's concept mixture,
    the criterion between starts) and ``init_scores_`` (the score of every start).
    """

    parameter_constraints: ClassVar[dict[str, list]] = {
        "n_concepts": [Interval(Integral, 1, 200)],
        "alpha": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "n_components": [Interval(Integral, 1, None)],
        "max_iter": [Interval(Integral, 1, None)],
        "tol": [Interval(Real, 0, None)],
        "e_steps": [Interval(Integral, 1, None)],
        "pred_weight": [Interval(Real, 0, None)],
        "h_steps": [Interval(Integral, 0, None)],
        "h_lr": [Interval(Real, 0, None)],
        "h_l2": [Interval(Real, 0, None)],
        "covariance": [Options(COVARIANCES)],
        "shrinkage": [Interval(Real, 0, 1)],
        "reg_covar": [Interval(Real, 0, None, closed="neither")],
        "use_attention": [bool],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "n_init": [Interval(Integral, 1, None)],
        "init_sample": [Interval(Integral, 1, None)],
        "pca_sample": [Interval(Integral, 1, None)],
        "random_state": [Interval(Integral, 0, 2**32 - 1), None],
    }

    def __init__(self, n_concepts: int = 8, *, alpha: float | np.ndarray = 0.1, n_components: int = 32,
                 max_iter: int = 30, tol: float = 1e-3, e_steps: int = 10, pred_weight: float = 1.0,
                 h_steps: int = 20, h_lr: float = 2.0, h_l2: float = 1e-3, covariance: str = "full",
                 shrinkage: float = 0.1, reg_covar: float = 1e-3, use_attention: bool = True,
                 temperature: float = 1.0, n_init: int = 1, init_sample: int = 10_000,
                 pca_sample: int = 50_000, random_state: int | None = 0):
        self.n_concepts = n_concepts
        self.alpha = alpha
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.e_steps = e_steps
        self.pred_weight = pred_weight
        self.h_steps = h_steps
        self.h_lr = h_lr
        self.h_l2 = h_l2
        self.covariance = covariance
        self.shrinkage = shrinkage
        self.reg_covar = reg_covar
        self.use_attention = use_attention
        self.temperature = temperature
        self.n_init = n_init
        self.init_sample = init_sample
        self.pca_sample = pca_sample
        self.random_state = random_state

    # ---- validation -----------------------------------------------------------------------------
    def _check_params(self, n_patches: int) -> None:
        """Every parameter against :attr:`parameter_constraints`, then what depends on the data: ``n_concepts``
        at most ``n_patches``, ``alpha`` positive and a scalar or one value per concept."""
        validate(self.get_params(deep=False), self.parameter_constraints, type(self).__name__)
        K = self.n_concepts
        if n_patches < K:
            raise ValueError(f"PACE: n_concepts must be an integer in [1, n_patches={n_patches}]; got {K!r}")
        a = np.asarray(self.alpha, dtype=np.float64)
        if a.ndim > 1 or (a.ndim == 1 and a.shape != (K,)) or not (np.isfinite(a).all() and np.all(a > 0)):
            raise ValueError(f"PACE: alpha must be > 0, a scalar or one value per concept ({K}); got {self.alpha!r}")

    @staticmethod
    def _check_input(patches, attention) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(patches, dtype=np.float32)
        if X.ndim != 3 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"patches must be (n_images, n_patches, dim); got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("patches contain NaN or inf")
        M, J, _ = X.shape
        if attention is None:
            A = np.full((M, J), 1.0 / J, np.float64)
        else:
            A = np.asarray(attention, dtype=np.float64)
            if A.shape != (M, J):
                raise ValueError(f"attention must be (n_images, n_patches) = {(M, J)}; got {A.shape}")
            if not np.isfinite(A).all() or (A < 0).any():
                raise ValueError("attention must be finite and non-negative")
            s = A.sum(1, keepdims=True)
            A = np.where(s > 0, A / np.where(s > 0, s, 1.0), 1.0 / J)
        return X, A

    @property
    def _diagonal(self) -> bool:
        return self.covariance in ("diag", "isotropic")

    def _require_fitted(self) -> None:
        if not hasattr(self, "concepts_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this PACE model is not fitted yet; call fit(patches, attention) first")

    # ---- pieces ---------------------------------------------------------------------------------
    def _weights(self, A: np.ndarray) -> np.ndarray:
        J = A.shape[1]
        return (A * J) if self.use_attention else np.ones_like(A)

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        M, J, d = X.shape
        Y = (X.reshape(-1, d) - self.mean_) @ self.components_.T
        return Y.reshape(M, J, -1)

    def _log_density(self, Y: np.ndarray) -> np.ndarray:
        """log N(y | μ_k, Σ_k) without the 2π constant: (M, J, K)."""
        M, J, D = Y.shape
        F = Y.reshape(-1, D).astype(np.float64)
        mu = self.concepts_
        if self._diagonal:                  # "diag" and "isotropic" keep (K, D) variances
            prec = 1.0 / self.covariances_                                     # (K, D)
            maha = (F * F) @ prec.T - 2.0 * F @ (mu * prec).T + (mu * mu * prec).sum(1)[None, :]
            logdet = np.log(self.covariances_).sum(1)
        else:
            # precision Cholesky factors U_k (Σ_k⁻¹ = U_k U_kᵀ): maha = ‖y U_k − μ_k U_k‖², one matmul for all k
            K = len(mu)
            U = np.empty((K, D, D))
            logdet = np.empty(K)
            for k in range(K):
                L = np.linalg.cholesky(self.covariances_[k])
                U[k] = np.linalg.inv(L).T
                logdet[k] = 2.0 * np.log(np.diag(L)).sum()
            Uall = U.transpose(1, 0, 2).reshape(D, K * D).astype(np.float32)
            muU = np.einsum("kd,kde->ke", mu, U).reshape(1, K * D).astype(np.float32)
            F32 = F.astype(np.float32)
            maha = np.empty((len(F), K))
            step = max(1, 2_000_000 // (K * D))
            for s0 in range(0, len(F), step):
                Z = F32[s0:s0 + step] @ Uall - muU
                maha[s0:s0 + step] = (Z * Z).reshape(len(Z), K, D).sum(2)
        np.maximum(maha, 0.0, out=maha)
        return (-0.5 * (maha + logdet[None, :])).reshape(M, J, -1)

    def _e_step(self, loglik: np.ndarray, W: np.ndarray, gamma: np.ndarray | None, P: np.ndarray | None,
                n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point iterations of φ (M, J, K) and γ (M, K) for fixed μ, Σ, H."""
        from scipy.special import digamma

        _M, J, _K = loglik.shape
        alpha = self.alpha_
        data = W[:, :, None] * loglik / float(self.temperature)                # tempered log-likelihood
        if gamma is None:
            phi = _softmax(data.copy(), axis=2)
            gamma = alpha[None, :] + (W[:, :, None] * phi).sum(1)
        use_pred = P is not None and self.pred_weight > 0 and getattr(self, "coef_", None) is not None
        phi = None
        for _ in range(n_steps):
            elog = digamma(gamma) - digamma(gamma.sum(1, keepdims=True))
            s = data + elog[:, None, :]
            if use_pred and phi is not None:
                s += (self.pred_weight / J) * self._pred_grad(phi.mean(1), P)[:, None, :]
            phi = _softmax(s, axis=2)
            gamma = alpha[None, :] + (W[:, :, None] * phi).sum(1)
        return phi, gamma

    def _pred_grad(self, phibar: np.ndarray, P: np.ndarray) -> np.ndarray:
        """∂/∂φ̄ of Σ_c ỹ_c log softmax(Hᵀφ̄)_c = H ỹ − H softmax(Hᵀφ̄): (M, K)."""
        H = self.coef_
        q = _softmax(phibar @ H, axis=1)
        return (P - q) @ H.T

    def _m_step(self, Y: np.ndarray, W: np.ndarray, phi: np.ndarray, P: np.ndarray | None) -> None:
        M, _J, D = Y.shape
        K = phi.shape[2]
        R = (phi * W[:, :, None]).reshape(-1, K)                               # (N, K)
        F = Y.reshape(-1, D).astype(np.float32)
        R = R.astype(np.float32)
        Nk = R.sum(0, dtype=np.float64)
        live = Nk > 1e-6 * max(Nk.sum(), 1.0)
        mu = _tdot(R, F).astype(np.float64) / np.maximum(Nk, 1e-12)[:, None]
        floor = self.reg_covar * self._scale
        if self._diagonal:
            var = np.maximum(_tdot(R, F * F).astype(np.float64) / np.maximum(Nk, 1e-12)[:, None] - mu * mu, 0.0)
            if self.covariance == "isotropic":  # pooled over live concepts and dimensions: one σ² for all
                w = np.where(live, Nk, 0.0)
                var = np.full_like(var, float(w @ var.mean(1)) / max(float(w.sum()), 1e-12))
            cov = var + floor
        else:
            eye = np.eye(D)
            F32 = F.astype(np.float32)
            R32 = R.astype(np.float32)
            second = np.zeros((K, D * D))
            step = max(1, 4_000_000 // (D * D))
            for s0 in range(0, len(F32), step):   # Σ_n R_nk y_n y_nᵀ for all k: one GEMM per chunk
                Fc = F32[s0:s0 + step]
                second += _tdot(R32[s0:s0 + step], (Fc[:, :, None] * Fc[:, None, :]).reshape(len(Fc), D * D))
            S = second.reshape(K, D, D) / np.maximum(Nk, 1e-12)[:, None, None] - mu[:, :, None] * mu[:, None, :]
            S = 0.5 * (S + S.transpose(0, 2, 1))
            if self.covariance == "tied":  # pooled within-concept covariance, the same for every concept
                w = np.where(live, Nk, 0.0)
                S = np.broadcast_to(np.einsum("k,kde->de", w / max(w.sum(), 1e-12), S), S.shape).copy()
            s = float(self.shrinkage)
            tr = np.trace(S, axis1=1, axis2=2)[:, None, None] / D
            cov = (1 - s) * S + (s * tr + floor) * eye[None]
        # a concept that lost all its patches keeps its previous parameters
        self.concepts_ = np.where(live[:, None], mu, self.concepts_)
        if self.covariance == "isotropic":   # shared: dead concepts take the pooled σ² too
            self.covariances_ = cov
        elif self.covariance == "diag":
            self.covariances_ = np.where(live[:, None], cov, self.covariances_)
        else:
            self.covariances_ = np.where(live[:, None, None], cov, self.covariances_)
        if P is not None and self.pred_weight > 0:
            phibar = phi.mean(1)
            H = self.coef_
            for _ in range(self.h_steps):
                q = _softmax(phibar @ H, axis=1)
                grad = _tdot(phibar, P - q) / M - self.h_l2 * H
                H = H + self.h_lr * grad
            self.coef_ = H

    def _relocate_empty(self, Y: np.ndarray, W: np.ndarray, phi: np.ndarray) -> bool:
        """Concepts without attention-weighted mass split the broadest concept (mass × spread of its own
        patches) along the main axis of its own patches. The patches, not ``covariances_``, give the spread
        and the axis: a shared covariance (tied, isotropic) says nothing about one concept's shape."""
        K = phi.shape[2]
        R = (phi * W[:, :, None]).reshape(-1, K).astype(np.float32)
        F = Y.reshape(-1, Y.shape[2]).astype(np.float32)
        mass = R.sum(0, dtype=np.float64)
        dead = np.flatnonzero(mass < 1e-3 * max(mass.sum(), 1.0) / K)
        if not len(dead):
            return False
        safe = np.maximum(mass, 1e-12)
        mu = _tdot(R, F).astype(np.float64) / safe[:, None]
        spread = _tdot(R, (F * F).sum(1, keepdims=True)).astype(np.float64)[:, 0] / safe - (mu * mu).sum(1)
        for k in dead:
            score = mass * np.maximum(spread, 0.0)
            score[dead] = -np.inf
            c = int(np.argmax(score))
            Z = F - mu[c].astype(np.float32)
            S = _tdot(R[:, c:c + 1] * Z, Z).astype(np.float64) / safe[c]
            vals, vecs = np.linalg.eigh(0.5 * (S + S.T))
            step = 0.5 * np.sqrt(max(vals[-1], 0.0)) * vecs[:, -1]
            self.concepts_[k] = self.concepts_[c] + step
            self.concepts_[c] = self.concepts_[c] - step
            self.covariances_[k] = self.covariances_[c]
            mass[k] = mass[c] = mass[c] / 2
        log.debug("PACE: split concepts for %d empty one(s)", len(dead))
        return True

    # ---- public API -----------------------------------------------------------------------------
    def fit(self, patches, attention=None, predictions=None, *, progress: Progress | None = None) -> PACE:
        """Fit on ``patches`` (M, J, d) with ``attention`` (M, J) (None: uniform) and the model's
        ``predictions`` (M, C) probabilities or (M,) integer labels (None: no prediction term).

        ``progress(done, n_init * max_iter)`` after each EM iteration (a start that converges early jumps to
        the end of its budget, so the last call has done == total). Returns self.
        """
        with _one_blas_thread():
            return self._fit(patches, attention, predictions, progress)

    def _fit(self, patches, attention, predictions, progress) -> PACE:
        from sklearn.decomposition import PCA

        t0 = time.perf_counter()
        X, A = self._check_input(patches, attention)
        M, J, d = X.shape
        self._check_params(M * J)
        P = as_predictions(predictions, M)
        K = int(self.n_concepts)
        rng = np.random.default_rng(self.random_state)
        flat = X.reshape(-1, d)
        take = rng.choice(len(flat), size=min(len(flat), self.pca_sample), replace=False)
        D = int(min(self.n_components, d, len(take)))
        pca = PCA(n_components=D, random_state=self.random_state).fit(flat[np.sort(take)])
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        Y = self._reduce(X)
        W = self._weights(A)
        self._scale = float(Y.reshape(-1, D).var(0).mean()) or 1.0
        n_init = int(self.n_init)
        seeds = rng.integers(0, 2**31 - 1, size=n_init)
        best, scores = None, []
        for i, seed in enumerate(seeds):
            def step(it, total, i=i):
                if progress is not None:
                    progress(i * int(self.max_iter) + it, n_init * int(self.max_iter))
            state = self._run(Y, W, P, int(seed), step)
            step(int(self.max_iter), None)  # a start that converged early counts as its whole budget
            scores.append(state["score"])
            if best is None or state["score"] > best["score"]:
                best = state
        for name, value in best.items():
            if name != "score":
                setattr(self, name, value)
        self.score_ = float(best["score"])
        self.init_scores_ = np.asarray(scores)
        phi = self.phi_
        R = (phi * W[:, :, None]).reshape(-1, K)
        Nk = R.sum(0)
        self.shares_ = (Nk / Nk.sum()).astype(np.float32)
        self.prototypes_ = (_tdot(R, flat).astype(np.float64) / np.maximum(Nk, 1e-12)[:, None]).astype(np.float32)
        self.n_features_in_ = d
        self.fit_seconds_ = time.perf_counter() - t0
        log.info("PACE fit: %d images x %d patches, K=%d, D=%d, best of %d start(s) (scores %s), %d iterations "
                 "(%s) in %.1fs", M, J, K, D, n_init, np.round(scores, 3).tolist(), self.n_iter_,
                 "converged" if self.converged_ else "max_iter", self.fit_seconds_)
        return self

    def _run(self, Y: np.ndarray, W: np.ndarray, P: np.ndarray | None, seed: int, progress) -> dict:
        """One variational EM run from a k-means start with ``seed``; returns the fitted state and its score."""
        from sklearn.cluster import KMeans

        M, J, D = Y.shape
        K = int(self.n_concepts)
        rng = np.random.default_rng(seed)
        Fy = Y.reshape(-1, D)
        # initialise: k-means on a sample of reduced patches, weighted like every M-step (J · attention) so
        # that patches the model ignores do not pull the start; covariances of the hard clusters
        take = np.sort(rng.choice(len(Fy), size=min(len(Fy), max(self.init_sample, K)), replace=False))
        w = W.reshape(-1)[take]
        km = KMeans(n_clusters=K, n_init=2, random_state=seed).fit(Fy[take], sample_weight=w if w.sum() > 0 else None)
        labels = km.predict(Fy)
        self.concepts_ = km.cluster_centers_.astype(np.float64)
        onehot = np.zeros((len(Fy), K))
        onehot[np.arange(len(Fy)), labels] = 1.0
        self.covariances_ = np.ones((K, D)) if self._diagonal else np.tile(np.eye(D), (K, 1, 1))
        self.coef_ = np.zeros((K, P.shape[1])) if P is not None else None
        self.alpha_ = np.broadcast_to(np.asarray(self.alpha, np.float64), (K,)).copy()
        self._m_step(Y, W if float(W.sum()) > 0 else np.ones_like(W), onehot.reshape(M, J, K), None)
        gamma, theta = None, None
        converged, n_iter = False, 0
        for it in range(1, int(self.max_iter) + 1):
            loglik = self._log_density(Y)
            phi, gamma = self._e_step(loglik, W, gamma, P, int(self.e_steps))
            self._m_step(Y, W, phi, P)
            moved = it < int(self.max_iter) and self._relocate_empty(Y, W, phi)
            if moved:  # restart γ from the data: a sparse prior would keep the new concept out of every image
                gamma = None
            change = np.inf
            if gamma is not None:
                new = gamma / gamma.sum(1, keepdims=True)
                change = np.inf if theta is None else float(np.abs(new - theta).max())
                theta = new
            n_iter = it
            progress(it, int(self.max_iter))
            if change < self.tol and not moved:
                converged = True
                break
        loglik = self._log_density(Y)
        phi, gamma = self._e_step(loglik, W, gamma, P, int(self.e_steps))
        theta = gamma / gamma.sum(1, keepdims=True)
        # the fit's score: attention-weighted mean log-likelihood of the patches under their image's mixture
        # Σ_k θ_mk N(y | μ_k, Σ_k) (2π constant dropped); the start with the highest score is kept
        from scipy.special import logsumexp

        mix = logsumexp(loglik + np.log(np.maximum(theta, 1e-300))[:, None, :], axis=2)
        score = float((W * mix).sum() / max(float(W.sum()), 1e-12))
        return {"concepts_": self.concepts_.copy(), "covariances_": self.covariances_.copy(),
                "coef_": None if self.coef_ is None else self.coef_.copy(), "alpha_": self.alpha_.copy(),
                "phi_": phi.astype(np.float32), "gamma_": gamma, "theta_": theta.astype(np.float32),
                "n_iter_": n_iter, "converged_": converged, "score": score}

    def transform(self, patches, attention=None, predictions=None) -> tuple[np.ndarray, np.ndarray]:
        """E-step only: ``(theta (M, K) float32 rows summing to 1, phi (M, J, K) float32)``.

        ``predictions`` (optional) adds the prediction term as in training.
        """
        self._require_fitted()
        X, A = self._check_input(patches, attention)
        if X.shape[2] != self.n_features_in_:
            raise ValueError(f"patches have dim {X.shape[2]}, the model was fitted on {self.n_features_in_}")
        P = as_predictions(predictions, len(X))
        if P is not None and (self.coef_ is None or P.shape[1] != self.coef_.shape[1]):
            P = None
        Y = self._reduce(X)
        W = self._weights(A)
        with _one_blas_thread():
            phi, gamma = self._e_step(self._log_density(Y), W, None, P, int(self.e_steps))
        theta = gamma / gamma.sum(1, keepdims=True)
        return theta.astype(np.float32), phi.astype(np.float32)

    def fit_transform(self, patches, attention=None, predictions=None, **kw) -> tuple[np.ndarray, np.ndarray]:
        self.fit(patches, attention, predictions, **kw)
        return self.theta_, self.phi_

    def reduce(self, patches) -> np.ndarray:
        """Patches (M, J, d) -> the fitted PCA space (M, J, D)."""
        self._require_fitted()
        X, _ = self._check_input(patches, None)
        return self._reduce(X)

    def prototype_patches(self, patches, phi: np.ndarray | None = None, n: int = 8) -> np.ndarray:
        """Per concept, up to ``n`` patches nearest its mean (one per image), among the patches whose
        most likely concept it is: (K, n, 2) int array of (image row, patch index), -1 where missing."""
        self._require_fitted()
        Y = self.reduce(patches)
        phi = self.phi_ if phi is None else np.asarray(phi)
        if phi.shape[:2] != Y.shape[:2]:
            raise ValueError(f"phi must match patches {Y.shape[:2]}; got {phi.shape[:2]}")
        _M, J, _ = Y.shape
        K = self.concepts_.shape[0]
        with _one_blas_thread():
            ll = self._log_density(Y).reshape(-1, K)
        arg = phi.reshape(-1, K).argmax(1)
        out = np.full((K, n, 2), -1, np.int64)
        for k in range(K):
            cand = np.flatnonzero(arg == k)
            if not len(cand):
                continue
            order = cand[np.argsort(-ll[cand, k], kind="stable")]
            seen, got = set(), 0
            for f in order:
                m = int(f // J)
                if m in seen:
                    continue
                seen.add(m)
                out[k, got] = (m, int(f % J))
                got += 1
                if got == n:
                    break
        return out
