"""Which keys a query may see: the one rule every attention impl uses.

`KeyWindow(left, right)` is the static, position-only part: key `k` is
visible from the absolute query position `q` when `q - left <= k <= q + right`
(`None` leaves that side unbounded). Causal attention is `right=0`. It is
hashable, so kernels can take it as a static argument, and `visible` uses only
Python operators, so the same expression runs on `keras.ops` tensors, `jnp`
inside Pallas kernels and torch inside a flex `mask_mod`.

`window_from_options(causal, sliding_window)` turns the public
`dot_product_attention` options into a `KeyWindow`:

- causal, no window: `k <= q`;
- causal window `W` (int): `q - W < k <= q` (`W` keys);
- two-sided window `W` (int, non-causal; T5Gemma's encoder): `|q - k| <= W`;
- `(left, right)` (non-causal): `q - left <= k <= q + right`. T5Gemma 2's
  encoder window `W` is `t5gemma2_encoder_window(W)`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class KeyWindow:
    """Keys `k` visible from query `q`: `q - left <= k <= q + right`.

    Args:
        left: int or None. Keys before the query that stay visible; `None`
            for all of them. Defaults to `None`.
        right: int or None. Keys after the query that stay visible; `None`
            for all of them, `0` for causal attention. Defaults to `None`.

    Examples:

    >>> import numpy as np
    >>> q, k = np.arange(4)[:, None], np.arange(4)[None]
    >>> KeyWindow(left=1, right=0).visible(q, k).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """

    left: object = None
    right: object = None

    def __post_init__(self):
        for name in ("left", "right"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int)
                or value < 0
            ):
                raise ValueError(
                    f"KeyWindow.{name} must be None or an int >= 0. "
                    f"Received: {name}={value!r}."
                )

    @property
    def causal(self):
        return self.right == 0

    @property
    def bounded(self):
        """Whether both sides are finite (block skipping pays off)."""
        return self.left is not None and self.right is not None

    def visible(self, q, k):
        """Bool tensor: `k` visible from `q` (broadcasting operands)."""
        mask = None
        if self.left is not None:
            mask = k >= q - self.left
        if self.right is not None:
            after = k <= q + self.right
            mask = after if mask is None else mask & after
        if mask is None:
            mask = (q - k) == (q - k)  # all true, broadcast shape
        return mask


def window_from_options(causal, sliding_window):
    """`KeyWindow` of the public `causal` / `sliding_window` options.

    Args:
        causal: bool. Hide keys after the query.
        sliding_window: int, `(left, right)` or None. An int is the causal
            window (`q - W < k <= q`) or, without `causal`, the two-sided
            `|q - k| <= W`; a pair (non-causal only) keeps
            `q - left <= k <= q + right`.

    Returns:
        A `KeyWindow`.

    Examples:

    >>> window_from_options(True, 4)
    KeyWindow(left=3, right=0)
    >>> window_from_options(False, (255, 256))
    KeyWindow(left=255, right=256)
    """
    if sliding_window is None:
        return KeyWindow(None, 0 if causal else None)
    if isinstance(sliding_window, (tuple, list)):
        if causal:
            raise ValueError(
                "A `(left, right)` sliding window is for non-causal "
                "attention; causal attention takes an int window `W` "
                f"(keys q - W < k <= q). Received: causal=True, "
                f"sliding_window={sliding_window!r}."
            )
        if len(sliding_window) != 2:
            raise ValueError(
                "`sliding_window` must be an int or a `(left, right)` pair. "
                f"Received: sliding_window={sliding_window!r}."
            )
        return KeyWindow(*(int(_check_int(x, sliding_window))
                           for x in sliding_window))
    width = _check_int(sliding_window, sliding_window)
    if causal:
        if width < 1:
            raise ValueError(
                "A causal `sliding_window` must be >= 1 (the query's own "
                f"key). Received: sliding_window={sliding_window!r}."
            )
        return KeyWindow(width - 1, 0)
    return KeyWindow(width, width)


def _check_int(x, received):
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(
            "`sliding_window` must be an int >= 0 or a `(left, right)` pair "
            f"of ints >= 0. Received: sliding_window={received!r}."
        )
    return x


def t5gemma2_encoder_window(sliding_window):
    """T5Gemma 2's bidirectional encoder window `W` as `(left, right)`.

    transformers keeps key `kv` for query `q` when `0 <= q - kv < (W + 1)
    // 2` or `0 < kv - q < W // 2 + 1`, i.e. `q - left <= kv <= q + right`
    with `left = (W + 1) // 2 - 1` and `right = W // 2`.

    Args:
        sliding_window: int. The config's `sliding_window` (`W >= 1`).

    Returns:
        A `(left, right)` tuple for `dot_product_attention(sliding_window=)`.

    Examples:

    >>> t5gemma2_encoder_window(512)
    (255, 256)
    >>> t5gemma2_encoder_window(5)
    (2, 2)
    """
    if isinstance(sliding_window, bool) or not isinstance(
        sliding_window, int
    ) or sliding_window < 1:
        raise ValueError(
            "T5Gemma 2's `sliding_window` must be an int >= 1. Received: "
            f"sliding_window={sliding_window!r}."
        )
    return ((sliding_window + 1) // 2 - 1, sliding_window // 2)
