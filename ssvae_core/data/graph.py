"""Label propagation over the input-space k-nearest-neighbour graph.

Before training, the few known labels are spread over a kNN graph of the training inputs
(Zhou et al., 2004, "Learning with local and global consistency"):

    W_ij = 1 if j is among the k nearest neighbours of i or i among those of j, else 0
    S    = D^{-1/2} W D^{-1/2}                  (D the degree matrix of W, diagonal of W ignored)
    F    ← α S F + (1 − α) Y                    (Y the one-hot known labels, 0 elsewhere)

The iteration is scikit-learn's ``LabelSpreading``, the field's reference implementation,
run on the symmetric 0/1 graph ``W`` above through a callable kernel. Its built-in
``kernel="knn"`` is another graph (directed, each row counted among its own k neighbours,
normalised by in-degree), which on the benchmark splits selects 7–14 % other rows. On ``W``
it gives the same graph labels as iterating the update by hand. It stops when the *sum*
over all entries of ``|ΔF|`` falls below ``tolerance``. ``F`` is normalised per row;
``max_y F_iy`` is how confident the graph is about row ``i``. The most confident unlabeled
rows become *graph labels*, a training signal for the head next to the true labels
(``[loss.graph_label]``). They never enter the τ counts: τ stays an estimate from the true
labels alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse

from ssvae_core.data.neighbours import nearest_neighbours
from ssvae_core.options import option


def knn_affinity(x: np.ndarray, num_neighbours: int) -> scipy.sparse.csr_matrix:
    """The symmetric 0/1 affinity ``W`` of the kNN graph of ``x`` (rows flattened)."""
    neighbours = nearest_neighbours(x, num_neighbours)
    count, k = neighbours.shape
    rows = np.repeat(np.arange(count), k)
    directed = scipy.sparse.csr_matrix(
        (np.ones(rows.size, dtype=np.float64), (rows, neighbours.reshape(-1))), shape=(count, count)
    )
    return directed.maximum(directed.T).tocsr()


def propagate_labels(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    num_neighbours: int = 10,
    alpha: float = 0.2,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
) -> np.ndarray:
    """Label distributions ``F`` (``N × Y``, rows summing to 1) spread from ``labels``.

    ``labels`` holds a class per row, ``-1`` where unknown. A row the graph never reaches
    (a component without any known label) gets the uniform distribution.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    labels = np.asarray(labels)
    uniform = np.full((labels.shape[0], num_classes), 1.0 / num_classes)
    if not np.any(labels >= 0):
        return uniform
    flat = np.asarray(x).reshape(labels.shape[0], -1)
    model = LabelSpreading(
        # Called once, as kernel(X, X), by fit. Never call predict/predict_proba on this model:
        # they would call kernel(X_fit, X_new) and this kernel ignores its second argument.
        kernel=lambda rows, _: knn_affinity(rows, num_neighbours),
        alpha=alpha,
        tol=tolerance,
        max_iter=max_iterations,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(flat, labels)
    # Columns of label_distributions_ are the classes present in ``labels`` only.
    spread = np.zeros((labels.shape[0], num_classes))
    spread[:, model.classes_.astype(int)] = model.label_distributions_
    # sklearn leaves a row without mass at all zeros; ours is uniform.
    reached = spread.sum(axis=1, keepdims=True) > 0
    return np.where(reached, spread, uniform)


def graph_labels(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    share: float,
    num_neighbours: int = 10,
    alpha: float = 0.2,
    per_class: bool = False,
) -> np.ndarray:
    """A propagated label for the ``share`` most confident unlabeled rows, ``-1`` elsewhere.

    With ``per_class`` the share is taken within each propagated class (the rows whose
    ``argmax_y F_iy`` is that class, rounded per class) rather than over all rows. A
    far-reaching propagation (large α) is most confident deep inside the large, compact
    classes, so a global cut can leave a class with few graph labels; per class, each
    keeps its share.

    Known labels stay ``-1`` here: they reach the loss through the supervised term; so do
    rows the graph never reached (their ``F`` is uniform). Ties at the confidence cut-off
    are resolved by row order.
    """
    labels = np.asarray(labels)
    result = np.full(labels.shape[0], -1, dtype=np.int32)
    unlabeled = np.flatnonzero(labels < 0)
    chosen_count = round(share * unlabeled.size)
    if chosen_count == 0 or not np.any(labels >= 0):
        return result
    distributions = propagate_labels(
        x, labels, num_classes, num_neighbours=num_neighbours, alpha=alpha
    )[unlabeled]
    confidence = distributions.max(axis=1)
    predicted = distributions.argmax(axis=1)
    # A row the propagation never reached is uniform: it belongs to no class.
    reached = np.flatnonzero(confidence > distributions.min(axis=1))
    if per_class:
        groups = [reached[predicted[reached] == label] for label in range(num_classes)]
        order = np.concatenate(
            [
                rows[np.argsort(-confidence[rows], kind="stable")[: round(share * rows.size)]]
                for rows in groups
            ]
        ).astype(np.int64)
    else:
        order = reached[np.argsort(-confidence[reached], kind="stable")[:chosen_count]]
    result[unlabeled[order]] = predicted[order]
    return result


def blur_option(default: float = 0.0) -> float:
    """The ``blur`` option of a component that builds an input-space graph."""
    return option(
        default,
        help="σ in pixels of a Gaussian blur of the images before the kNN graph is built (0: none)",
        minimum=0.0,
    )


def deskew_option(default: bool = False) -> bool:
    """The ``deskew`` option of a component that builds an input-space graph."""
    return option(
        default,
        help="shear each one-channel image upright by its intensity moments before the kNN graph is built (handwriting); images only",
    )


GRAPH_METRICS = ("euclidean", "cosine")
"""How an input-space graph measures distance between rows (``smoothed_rows``'s ``metric``)."""


def metric_option(default: str = "euclidean") -> str:
    """The ``metric`` option of a component that builds an input-space graph."""
    return option(
        default,
        help="distance of the kNN graph: euclidean, or cosine (each row scaled to unit length, so an image's neighbours do not depend on how much ink it has)",
        choices=GRAPH_METRICS,
    )


def choose_features_option(default: bool = False) -> bool:
    """The ``choose_features`` option of a component that builds an input-space graph."""
    return option(
        default,
        help="build the graph from the blur and deskew set here only where they propagate the labels at least as well as the plain pixels, each labeled row left out in turn (needs a class with two labels; otherwise, or when false, the features set here)",
    )


def deskewed(images: np.ndarray) -> np.ndarray:
    """Each image sheared so that its ink stands upright, and centred on its centre of mass.

    ``images`` is ``(N, H, W)`` or ``(N, H, W, 1)`` (one channel, ink the larger values).
    From the image's intensity moments — centre of mass ``(m_r, m_c)``, row variance
    ``σ_rr`` and covariance ``σ_rc`` — the skew is ``a = σ_rc / σ_rr``; output pixel
    ``(r, c)`` reads the input (bilinearly) at ``(r + m_r − r₀, c + a (r − r₀) + m_c − c₀)``
    with ``(r₀, c₀)`` the image centre. Handwriting slants each writer's strokes differently;
    the shear removes most of that variation (the classic preprocessing of MNIST's
    nearest-neighbour results), so neighbours in pixel space more often share a class.
    A blank image is returned as it is.
    """
    from scipy.ndimage import map_coordinates

    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 4 and x.shape[-1] == 1
    if not (x.ndim == 3 or single):
        raise ValueError(
            f"deskewing needs one-channel images of shape (N, H, W) or (N, H, W, 1); got samples of shape {x.shape[1:]}"
        )
    if single:
        x = x[..., 0]
    count, height, width = x.shape
    rows = np.arange(height, dtype=np.float64)[None, :, None]
    cols = np.arange(width, dtype=np.float64)[None, None, :]
    mass = np.clip(x, 0.0, None).astype(np.float64)
    total = mass.sum(axis=(1, 2))
    blank = total <= 0
    total = np.where(blank, 1.0, total)[:, None, None]
    centre_r = (mass * rows).sum(axis=(1, 2), keepdims=True) / total
    centre_c = (mass * cols).sum(axis=(1, 2), keepdims=True) / total
    var_r = (mass * (rows - centre_r) ** 2).sum(axis=(1, 2), keepdims=True) / total
    cov_rc = (mass * (rows - centre_r) * (cols - centre_c)).sum(axis=(1, 2), keepdims=True) / total
    skew = np.where(var_r > 1e-12, cov_rc / np.maximum(var_r, 1e-12), 0.0)
    mid_r, mid_c = (height - 1) / 2.0, (width - 1) / 2.0
    source_r = np.broadcast_to(rows + centre_r - mid_r, x.shape)
    source_c = cols + skew * (rows - mid_r) + centre_c - mid_c
    index = np.broadcast_to(np.arange(count, dtype=np.float64)[:, None, None], x.shape)
    out = map_coordinates(x, [index, source_r, source_c], order=1, mode="constant", cval=0.0)
    out = np.where(blank[:, None, None], x, out).astype(np.float32)
    return out[..., None] if single else out


def smoothed_rows(x: np.ndarray, blur: float, *, deskew: bool = False, metric: str = "euclidean") -> np.ndarray:
    """The rows of ``x`` flattened, images first deskewed (``deskewed``) when asked and
    blurred by a Gaussian of ``blur`` pixels; with ``metric = "cosine"`` each row is then
    scaled to unit length (a row of zeros stays so), so that the Euclidean distance between
    rows, ``√(2 − 2 cos θ)``, orders neighbours by their cosine similarity.

    ``x`` is ``(N, H, W)`` or ``(N, H, W, C)`` for images (the blur acts on ``H`` and ``W``
    only); with ``blur = 0`` and no deskewing any shape is accepted and only flattened.
    These rows are what every input-space graph (graph labels, graph clusters, the
    calibration's propagation) is built from.
    """
    x = np.asarray(x, dtype=np.float32)
    if deskew:
        x = deskewed(x)
    if blur > 0:
        if x.ndim not in (3, 4):
            raise ValueError(
                f"blur needs images of shape (N, H, W) or (N, H, W, C); got samples of shape {x.shape[1:]}"
            )
        from scipy.ndimage import gaussian_filter

        sigma = (0.0, blur, blur, 0.0)[: x.ndim]
        x = gaussian_filter(x, sigma=sigma)
    rows = x.reshape(x.shape[0], -1)
    if metric == "cosine":
        length = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = np.divide(rows, length, out=np.zeros_like(rows), where=length > 0)
    elif metric != "euclidean":
        raise ValueError(f"unknown graph metric {metric!r}; allowed: {', '.join(GRAPH_METRICS)}")
    return rows


def spectral_clusters(
    x: np.ndarray,
    num_clusters: int,
    *,
    num_neighbours: int = 10,
    blur: float = 0.0,
    deskew: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """A cluster per row: spectral clustering of the symmetric kNN graph ``W`` of the inputs.

    The ``num_clusters`` eigenvectors of the normalised graph Laplacian with the smallest
    eigenvalues embed each row (Laplacian eigenmaps); the embedding is normalised per row
    and clustered by k-means (Ng, Jordan and Weiss, 2001). ``blur`` and ``deskew`` prepare
    images first (``smoothed_rows``). Deterministic for a given ``seed``.
    """
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding

    rows = smoothed_rows(x, blur, deskew=deskew)
    if not 2 <= num_clusters < rows.shape[0]:
        raise ValueError(
            f"spectral clustering needs 2 <= clusters < rows; got {num_clusters} clusters for {rows.shape[0]} rows"
        )
    affinity = knn_affinity(rows, min(num_neighbours, rows.shape[0] - 1))
    with warnings.catch_warnings():
        # A graph of several components still embeds: each component is its own cluster.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        embedding = spectral_embedding(
            affinity, n_components=num_clusters, random_state=seed, drop_first=False
        )
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True) + 1e-12
    kmeans = KMeans(num_clusters, n_init=10, random_state=seed)
    return kmeans.fit_predict(embedding).astype(np.int32)


def clusters_to_channels(
    clusters: np.ndarray, label_mass: np.ndarray | None, num_channels: int
) -> np.ndarray:
    """The channel each cluster is matched to (``(num_clusters,)``, distinct channels).

    ``label_mass`` is ``(N, Y)``: how much each row says for each label (one-hot known
    labels, propagated label distributions, or ``None`` when nothing is known). Channel
    ``y < Y`` is the one the τ head seeds for label ``y``; the clusters are matched to the
    channels by the Hungarian method on the label mass each cluster holds, so the cluster
    holding most of label ``y``'s mass goes to channel ``y``. Without labels cluster ``j``
    goes to channel ``j``.
    """
    from scipy.optimize import linear_sum_assignment

    clusters = np.asarray(clusters)
    num_clusters = int(clusters.max()) + 1 if clusters.size else 0
    if num_clusters > num_channels:
        raise ValueError(f"{num_clusters} clusters cannot be matched to {num_channels} channels")
    if label_mass is None:
        return np.arange(num_clusters)
    label_mass = np.asarray(label_mass, dtype=np.float64)
    score = np.zeros((num_clusters, num_channels))
    columns = min(label_mass.shape[1], num_channels)
    np.add.at(score[:, :columns], clusters, label_mass[:, :columns])
    rows, channels = linear_sum_assignment(-score)
    mapping = np.empty(num_clusters, dtype=np.int64)
    mapping[rows] = channels
    return mapping
