"""A backbone as an ordered list of blocks: what fine-tuning unfreezes from the top down."""

from __future__ import annotations

from torch import nn


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential | nn.ModuleList)


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _expand(module: nn.Module) -> list[nn.Module]:
    """Containers and stage-like modules (with a ``blocks`` container) opened into their parts."""
    blocks = getattr(module, "blocks", None)
    stage_like = isinstance(blocks, nn.Module) and _is_container(blocks) and len(blocks) > 1
    if not (_is_container(module) or stage_like):
        return [module] if _has_params(module) else []
    return [leaf for part in module.children() for leaf in _expand(part)]


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in forward order, input side first; fine-tuning unfreezes a suffix.

    * EfficientNet/MobileNet (timm ``EfficientNet``, ``MobileNetV3``): ``[conv_stem+bn1,
      blocks[0][0], ..., blocks[-1][-1], conv_head+bn2]`` (groups are ``nn.ModuleList``).
    * ResNet family: ``[conv1+bn1, each block of layer1..layer4]``.
    * Others: top-level children with parameters, containers (``blocks``, ``stages`` ...) opened.

    Parameters held directly by the backbone (ViT ``cls_token``/``pos_embed``) are in no block;
    :func:`marinelife.models.classifier.set_trainable` trains them only at fraction 1.0.
    """
    names = dict(backbone.named_children())
    if {"conv_stem", "blocks", "conv_head"} <= names.keys():
        stem = nn.ModuleList(m for m in (backbone.conv_stem, names.get("bn1")) if m is not None)
        tail = [names.get(n) for n in ("conv_head", "bn2", "norm_head")]
        top = nn.ModuleList(m for m in tail if m is not None and _has_params(m))
        inner = [block for stage in backbone.blocks for block in _expand(stage)]
        return [stem, *inner, top]
    if {"conv1", "layer1", "layer4"} <= names.keys():
        stem = nn.ModuleList(m for m in (backbone.conv1, names.get("bn1")) if m is not None)
        layers = [names[n] for n in ("layer1", "layer2", "layer3", "layer4")]
        return [stem, *(block for layer in layers for block in _expand(layer))]
    return [leaf for child in backbone.children() for leaf in _expand(child)]


def pooled_feature_size(backbone: nn.Module) -> int:
    # Models with a pre-logits stage (MobileNetV3's conv_head) pool to head_hidden_size, not
    # num_features; timm sets head_hidden_size to whatever a num_classes=0 model returns.
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
