"""Classification heads on top of pooled backbone features.

``linear``: dropout then one Linear layer (timm's own head). ``mlp``: the original Keras scripts'
dense stacks, ``Linear → (BatchNorm1d → LeakyReLU | LeakyReLU → BatchNorm1d) → Dropout`` per
hidden width, then the output Linear:

* two-stage original: ``hidden=[1024, 512, 256]``, ``dropout=[.5, .4, .3]``, ``norm_first=True``
* baseline original: ``hidden=[1024, 512, 256, 128]``, ``dropout=[.5, .4, .3, .2]``,
  ``norm_first=False`` (LeakyReLU before BatchNorm)

The LeakyReLU negative slope is 0.01 in both (note Keras' own default would be 0.3).
"""

from __future__ import annotations

from torch import nn

from marinelife.errors import MarineLifeError

HEAD_KINDS = ("linear", "mlp")
LEAKY_SLOPE = 0.01


def build_head(
    kind: str,
    in_features: int,
    num_classes: int,
    *,
    hidden: list[int],
    dropout: list[float],
    norm_first: bool,
    drop_rate: float,
) -> nn.Sequential:
    """A head mapping ``(N, in_features)`` features to ``(N, num_classes)`` logits.

    ``drop_rate`` applies to the linear head only; the MLP uses its per-layer ``dropout``.
    """
    if kind not in HEAD_KINDS:
        raise MarineLifeError(
            f"unknown head '{kind}'", fix=f"choose one of {', '.join(HEAD_KINDS)}"
        )
    if num_classes < 1 or in_features < 1:
        raise MarineLifeError(
            f"a head needs positive sizes (in_features={in_features}, num_classes={num_classes})"
        )
    if kind == "linear":
        return nn.Sequential(nn.Dropout(drop_rate), nn.Linear(in_features, num_classes))
    if len(hidden) != len(dropout):
        raise MarineLifeError(
            f"mlp head: {len(hidden)} hidden widths but {len(dropout)} dropout rates",
            fix="give head_hidden and head_dropout the same length",
        )
    layers: list[nn.Module] = []
    width = in_features
    for size, rate in zip(hidden, dropout, strict=True):
        if size < 1 or not 0.0 <= rate < 1.0:
            raise MarineLifeError(f"mlp head: width {size} / dropout {rate} out of range")
        norm, act = nn.BatchNorm1d(size), nn.LeakyReLU(LEAKY_SLOPE)
        layers += [nn.Linear(width, size), *((norm, act) if norm_first else (act, norm))]
        layers.append(nn.Dropout(rate))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
