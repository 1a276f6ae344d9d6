"""Small tensor helpers shared by losses, models and evaluation.

Every pairwise loss in tfembed starts from a distance matrix, and every one of them must stay
finite when two rows coincide (DESIGN §5): the gradient of ``sqrt`` at 0 is infinite, so the
squared distances are clamped away from zero *before* the root and the diagonal is masked to an
exact 0 afterwards (its gradient is then 0, not NaN).
"""

import tensorflow as tf

# Squared distances below this are treated as 0 before the square root; far below any distance a
# unit-norm embedding produces for two different images, far above float32 rounding noise.
_EPS = 1e-12


def as_float32(x):
    """Casts to float32 so mixed-precision embeddings give stable pairwise losses."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


# Below this many elements of an [N, M, D] difference tensor (64 MB in float32), distances are
# computed from explicit differences; above it, with one matmul.
DIRECT_DIFFERENCE_LIMIT = 1 << 24


def pairwise_squared_distances(a, b=None):
    """Squared Euclidean distances ``[N, M]`` between rows of ``a`` and rows of ``b``.

    For batch-sized inputs (``N·M·D`` ≤ ``DIRECT_DIFFERENCE_LIMIT``) it sums squared explicit
    differences, which is exact for duplicate rows: the ``|a|² − 2ab + |b|²`` expansion leaves
    ~1e-7 of rounding there, i.e. a distance of ~5e-4 after the root, enough to bias
    pairwise losses on batches with repeated images. Larger inputs (retrieval galleries) use the
    one-matmul expansion with negative rounding clamped to 0. When ``b`` is omitted the diagonal
    is exactly 0.
    """
    a = as_float32(a)
    same = b is None
    b = a if same else as_float32(b)

    def direct():
        return tf.reduce_sum(tf.square(a[:, None, :] - b[None, :, :]), axis=-1)

    def expanded():
        a2 = tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
        b2 = tf.reduce_sum(tf.square(b), axis=1, keepdims=True)
        return tf.maximum(a2 - 2.0 * tf.matmul(a, b, transpose_b=True) + tf.transpose(b2), 0.0)

    n, m, d = a.shape[0], b.shape[0], a.shape[-1]
    if n is not None and m is not None and d is not None:
        d2 = direct() if n * m * d <= DIRECT_DIFFERENCE_LIMIT else expanded()
    else:
        size = tf.cast(tf.shape(a)[0], tf.int64) * tf.cast(tf.shape(b)[0], tf.int64) * \
            tf.cast(tf.shape(a)[1], tf.int64)
        d2 = tf.cond(size <= DIRECT_DIFFERENCE_LIMIT, direct, expanded)
    if same:
        d2 = tf.linalg.set_diag(d2, tf.zeros(tf.shape(d2)[:1], d2.dtype))
    return d2


def safe_sqrt(x):
    """``sqrt`` whose value is 0 and gradient 0 (not inf/NaN) where ``x`` <= eps."""
    small = x <= _EPS
    root = tf.sqrt(tf.where(small, tf.ones_like(x), x))
    return tf.where(small, tf.zeros_like(x), root)


def pairwise_distances(a, b=None):
    """Euclidean distances ``[N, M]`` with finite gradients for identical rows."""
    return safe_sqrt(pairwise_squared_distances(a, b))


def off_diagonal_mask(n, dtype=tf.bool):
    """``[n, n]`` mask that is True (1) off the diagonal."""
    mask = tf.logical_not(tf.eye(n, dtype=tf.bool))
    return mask if dtype == tf.bool else tf.cast(mask, dtype)


def same_label_mask(labels, other=None):
    """``[N, M]`` boolean mask, True where labels match (diagonal included)."""
    labels = tf.reshape(labels, [-1])
    other = labels if other is None else tf.reshape(other, [-1])
    return tf.equal(labels[:, None], other[None, :])


# ------------------------------------------------------------------ replicas (DESIGN §5)

def num_replicas():
    """Replicas in sync of the current strategy (1 outside ``tf.distribute``)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_for_replicas(loss):
    """``loss / num_replicas`` inside a replica context (what ``keras.losses.Loss`` does).

    The optimizer all-reduces gradients with a SUM, so an unscaled per-replica loss would give
    N× gradients on N replicas.
    """
    n = num_replicas()
    if n > 1 and tf.distribute.in_cross_replica_context() is False:
        return loss / tf.cast(n, loss.dtype)
    return loss


def gather_replicas(*tensors):
    """Concatenates each tensor over the replicas (axis 0), differentiably.

    With one replica (or outside a replica context) the tensors come back unchanged. The
    gradient of ``ReplicaContext.all_gather`` sums the upstream gradients of all replicas before
    slicing out this replica's rows; every replica computes the same global loss, so that sum is
    N × the true gradient, which :func:`scale_for_replicas` then divides out.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensors if len(tensors) != 1 else tensors[0]
    out = tuple(_gather(ctx, t) for t in tensors)
    return out if len(out) != 1 else out[0]


def _gather(ctx, tensor):
    # A step's input (labels straight from the iterator) has no device; under
    # MultiWorkerMirroredStrategy all_gather needs one (else "destinations can not be empty").
    # The identity is placed on this replica's device.
    gathered = ctx.all_gather(tf.identity(tensor), axis=0)
    # all_gather forgets the static batch size; losses that need it (soft DarkRank enumerates
    # permutations at trace time) get it back when every replica's slice has a static size.
    if tensor.shape.rank and tensor.shape[0] is not None:
        gathered.set_shape([tensor.shape[0] * ctx.num_replicas_in_sync] + tensor.shape[1:])
    return gathered
