"""Any timm backbone as an encoder: ``tu-<timm model name>`` (SMP 0.6's TimmUniversalEncoder layout).

The timm model lives under ``model`` (``features_only=True``), so SMP checkpoints
with ``tu-`` encoders load strictly. Which of timm's features are returned is
decided from their strides, never from the model's name:

* a feature at each stride 2, 4, ..., ``2**depth`` (ResNet, EfficientNet, DenseNet...):
  they are returned after the input;
* no stride-2 feature but 4, 8, ... (ConvNeXt, Swin, MambaOut...): the stride-2 level
  is reported with 0 channels and returned as an empty view of the input, which
  decoders skip;
* an extra stride-1 feature (VGG) or several features at one stride: the deepest
  feature of each stride is taken;
* features that do not halve H and W exactly (Inception's unpadded convs): accepted,
  decoders resize to each skip's own size;
* channel-last (NHWC) features (Swin, MambaOut) are permuted to NCHW.

Backbones whose features all share one stride (ViT, DeiT, EVA...) have no pyramid:
they are DPT's encoders, see :mod:`.timm_vit`.

Models are built as timm (and SMP) build them, so eager outputs match SMP exactly,
fused attention kernels included. While a target exports (:func:`in_export_mode`),
timm's attention modules take their plain matmul/softmax path for that forward
(:func:`export_friendly_attention`): exported graphs hold no fused attention op.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segexport.errors import InvalidInputError, closest, unknown

from ..base.export_mode import in_export_mode
from ._base import missing_stride2_level
from .weights import PretrainedSettings, load_state_dict_file

#: create_model arguments the encoder sets itself; passing them as encoder kwargs is an error.
_RESERVED_KWARGS = ("in_chans", "features_only", "out_indices", "output_stride", "pretrained")
#: Model names timm resolves from a hub or a folder rather than its registry.
_SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
#: encoder_weights value meaning "timm's default pretrained tag" (SMP's default for every encoder).
DEFAULT_TAG_ALIAS = "imagenet"
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
MAX_DEPTH = 5


@contextlib.contextmanager
def export_friendly_attention(model: nn.Module) -> Iterator[None]:
    """While a segexport target exports (:func:`in_export_mode`), run timm's attention modules as plain matmul/softmax.

    timm picks ``F.scaled_dot_product_attention`` per module at construction
    (``fused_attn``), as SMP gets it; the two paths agree up to float rounding.
    Switching only for the exported forward keeps eager parity with SMP and keeps
    fused kernels out of graphs (an ONNX Attention op is not something every runtime
    takes). Outside export mode this is a no-op: a user's own ``torch.export`` keeps
    the fused kernel and so matches eager to the last bit, as SMP's does.
    """
    if not in_export_mode():
        yield
        return
    switched = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True


def check_timm_name(name: str) -> None:
    """Raise a clear error for a model or pretrained tag timm does not know (offline)."""
    import timm

    if name.startswith(_SOURCE_PREFIXES):
        return
    if not timm.is_model(name):
        raise unknown("timm model", name, timm.list_models())
    if "." in name:
        arch, tag = name.split(".", 1)
        tags = _pretrained_tags(arch)
        if tag not in tags:
            raise InvalidInputError(
                f"timm model {arch!r} has no pretrained tag {tag!r}; allowed: {', '.join(tags) or 'none'}."
                f"{closest(tag, tags)}"
            )


def _pretrained_tags(arch: str) -> list[str]:
    import timm

    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*") if "." in n]


def merge_timm_kwargs(ours: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``ours`` plus the user's extra timm kwargs; an argument set twice is an error."""
    duplicates = sorted(set(ours) & set(user))
    if duplicates:
        raise InvalidInputError(
            f"Encoder kwargs {', '.join(duplicates)} are set by segexport itself; use the matching "
            "argument instead (in_channels, encoder_depth, encoder_weights, encoder_output_stride)."
        )
    return {**ours, **user}


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_WEIGHT_SUFFIXES)


def resolve_timm_weights(name: str, weights: str | bool | os.PathLike[str] | None) -> tuple[str, bool, Path | None]:
    """``(model name to build, download pretrained?, local file)`` for ``weights``.

    None/False: random init. True or ``"imagenet"``: timm's default pretrained tag.
    Another string: a pretrained tag of the model (``"a1_in1k"`` → ``resnet18.a1_in1k``)
    or a path to a local state_dict file.
    """
    if weights is None or weights is False:
        return name, False, None
    if weights is True:
        return name, True, None
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and os.path.isfile(weights)):
        path = Path(weights)
        if not path.is_file():
            raise InvalidInputError(f"Weights file {str(path)!r} does not exist or is not a file.")
        return name, False, path
    if not isinstance(weights, str):
        raise InvalidInputError(
            f"encoder_weights for timm encoders must be None, True, a pretrained tag or a file path; got {weights!r}."
        )
    if _looks_like_path(weights):
        raise InvalidInputError(f"Weights file {weights!r} does not exist or is not a file.")
    if weights == DEFAULT_TAG_ALIAS:
        return name, True, None
    arch, _, name_tag = name.partition(".")
    if name_tag and name_tag != weights:
        raise InvalidInputError(
            f"encoder_weights {weights!r} contradicts the pretrained tag in the encoder name {name!r}; "
            f"pass one of them (encoder_weights=True keeps the name's tag)."
        )
    tags = _pretrained_tags(arch)
    if weights not in tags:
        allowed = ["None", "True", DEFAULT_TAG_ALIAS, *tags, "<path to a local state_dict>"]
        raise unknown(f"encoder_weights for timm model {arch!r}", weights, allowed)
    return f"{arch}.{weights}", True, None


def create_timm_model(name: str, weights: str | bool | os.PathLike[str] | None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with segexport's weight rules and clear errors.

    A local file holds a timm model's state_dict (``timm.create_model(name).state_dict()``,
    .pth/.pt or .safetensors, read with ``weights_only``); its classifier keys are
    ignored, every other key must be there. It goes through timm's own loader, so
    timm still adapts the first conv to ``in_chans`` and resizes position embeddings.
    """
    import timm

    check_timm_name(name)
    name, pretrained, path = resolve_timm_weights(name, weights)
    if path is not None:
        if "pretrained_cfg_overlay" in kwargs:
            raise InvalidInputError("pretrained_cfg_overlay cannot be combined with a local weights file.")
        state_dict = _timm_state_dict_from_file(name, path, kwargs)
        # timm's own loader takes the checked state_dict: no download source, no classifier
        # surgery (the classifier keys are already settled), everything else as for its weights.
        overlay = {"state_dict": state_dict, "source": "", "classifier": None, "custom_load": False}
        kwargs = {**kwargs, "pretrained_cfg_overlay": overlay}
        pretrained = True
    # Loading a full model's file into a features-only model (EfficientNet builds one
    # directly) makes timm log the unused head keys as "unexpected": they were checked above.
    quiet = _quiet_logger("timm.models._builder") if path is not None else contextlib.nullcontext()
    with quiet:
        try:
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as exc:  # an encoder kwarg the timm model does not take
            raise InvalidInputError(f"timm model {name!r} rejects the given arguments: {exc}") from exc
        except RuntimeError as exc:
            if path is None:
                raise
            # timm's strict load_state_dict names the tensors whose shapes differ.
            first = str(exc).strip().splitlines()
            raise InvalidInputError(
                f"Weights file {str(path)!r} does not fit timm model {name!r}: {' '.join(first[:3])}"
            ) from exc


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _meta_model(name: str, **kwargs: Any) -> nn.Module:
    """Build on the meta device (no memory, no init cost), on the CPU when a model cannot."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError:
        raise
    except Exception:  # some models compute on tensors in __init__ (.item(), numpy)
        return timm.create_model(name, pretrained=False, **kwargs)


def _timm_state_dict_from_file(name: str, path: Path, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Read ``path`` and check it holds every key of timm model ``name`` except its classifier."""
    state_dict = load_state_dict_file(path)
    build_kwargs = {k: v for k, v in kwargs.items() if k not in ("features_only", "out_indices")}
    try:
        reference = _meta_model(name, **build_kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"timm model {name!r} rejects the given arguments: {exc}") from exc
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    classifier = _classifier_keys(reference, expected)
    state_dict = {k: v for k, v in state_dict.items() if k not in classifier}
    missing = sorted(set(expected) - classifier - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise InvalidInputError(
            f"Weights file {str(path)!r} is not a state_dict of timm model {name!r} "
            f"(expected timm.create_model({name!r}).state_dict()): missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}."
        )
    # The classifier never runs in a segmentation encoder; zeros of the right shape let
    # timm load the rest strictly whether or not the file had one.
    for key in classifier:
        state_dict[key] = torch.zeros(expected[key])
    return state_dict


def _classifier_keys(model: nn.Module, keys: dict[str, Any]) -> set[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in keys if any(k.startswith(f"{n}.") for n in names)}


def _all_reductions(model: nn.Module) -> list[int | None]:
    """Stride of every feature timm can return (not only the default ``out_indices``).

    None marks a pseudo-feature without a module (TResNet's space-to-depth stem).
    """
    return [int(f["reduction"]) if f.get("module") else None for f in model.feature_info.info]


def _pick_features(name: str, reductions: Sequence[int | None], depth: int) -> tuple[list[int], bool]:
    """Indices of timm features for strides 2..2**depth, and whether stride 2 is missing."""
    last_at: dict[int, int] = {}
    for index, reduction in enumerate(reductions):
        if reduction is not None:
            last_at[reduction] = index  # the deepest feature of each stride
    strides = [r for r in reductions if r is not None]
    if len(set(strides)) == 1:
        raise InvalidInputError(
            f"timm model {name!r} is ViT-style: all its features have stride {strides[0]}, so it has no "
            "feature pyramid. Use it with DPT (encoders.timm_vit.create_timm_vit_encoder); pyramid "
            "architectures need a hierarchical backbone (e.g. tu-convnext_atto, tu-resnet18)."
        )
    wanted = [2**k for k in range(1, depth + 1)]
    missing = [s for s in wanted[1:] if s not in last_at]
    if missing:
        raise InvalidInputError(
            f"timm model {name!r} has features at strides {strides}, but encoder_depth={depth} needs strides "
            f"{wanted} (2 may be absent); missing: {missing}."
        )
    stride2_missing = 2 not in last_at
    if stride2_missing and depth < 2:
        raise InvalidInputError(
            f"timm model {name!r} starts at stride 4, so encoder_depth must be 2..{MAX_DEPTH}; got {depth}."
        )
    return [last_at[s] for s in wanted if s in last_at], stride2_missing


class TimmUniversalEncoder(nn.Module):
    """A timm ``features_only`` model returning ``depth + 1`` features: the input, then strides 2..2**depth.

    ``out_channels[1]`` is 0 for models that start at stride 4; that level is an
    empty tensor no decoder consumes.
    """

    # SMP's capability flags (as SMP's TimmUniversalEncoder declares them).
    _is_torch_scriptable: bool = True
    _is_torch_exportable: bool = True
    _is_torch_compilable: bool = True
    __jit_unused_properties__ = ["out_channels", "depth", "in_channels", "output_stride"]

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        depth: int = 5,
        weights: str | bool | os.PathLike[str] | None = None,
        output_stride: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
            raise InvalidInputError(
                f"encoder_depth {depth!r} is out of range for timm encoders; allowed: 1..{MAX_DEPTH}."
            )
        if output_stride not in (8, 16, 32):
            raise InvalidInputError(f"encoder_output_stride {output_stride!r} is not supported; allowed: 8, 16, 32.")
        check_timm_name(name)
        self.name = name
        probe = _probe_features(name, kwargs)
        indices, self._stride2_missing = _pick_features(name, _all_reductions(probe), depth)
        # timm's Format enum is a str: channel-last feature wrappers (Swin, MambaOut) say "NHWC".
        self._channels_last = getattr(probe, "output_fmt", None) == "NHWC"

        ours: dict[str, Any] = {"in_chans": in_channels, "features_only": True, "out_indices": tuple(indices)}
        if output_stride != 32:
            _check_dilation(name, kwargs, indices, output_stride, expected_first=4 if self._stride2_missing else 2)
            # Only passed when asked for: many timm models do not take the argument at all.
            ours["output_stride"] = output_stride
        self.model = create_timm_model(name, weights, **merge_timm_kwargs(ours, kwargs))
        channels = list(self.model.feature_info.channels())
        self._out_channels = [in_channels, *([0] if self._stride2_missing else []), *channels]
        self._in_channels = in_channels
        self._depth = depth
        self._output_stride = output_stride

    @property
    def out_channels(self) -> list[int]:
        return list(self._out_channels)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def output_stride(self) -> int:
        return min(self._output_stride, 2**self._depth)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if torch.jit.is_scripting():  # TorchScript compiles no context managers; export mode never scripts
            features = self.model(x)
        else:
            with export_friendly_attention(self.model):
                features = list(self.model(x))
        if self._channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        if self._stride2_missing:
            features.insert(0, missing_stride2_level(x))
        features.insert(0, x)
        return features


def _probe_features(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """The model with all its features (on the meta device) to read strides and format."""
    probe_kwargs = {k: v for k, v in kwargs.items() if k not in _RESERVED_KWARGS and k != "pretrained_cfg_overlay"}
    try:
        return _meta_model(name, features_only=True, **probe_kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"timm model {name!r} rejects the given arguments: {exc}") from exc
    except RuntimeError as exc:  # timm: "features_only not implemented for ..."
        raise InvalidInputError(f"timm model {name!r} cannot serve as an encoder: {exc}") from exc


def _check_dilation(
    name: str, kwargs: dict[str, Any], indices: list[int], output_stride: int, expected_first: int
) -> None:
    """Raise unless timm can dilate ``name`` so its picked features stop at ``output_stride``."""
    probe_kwargs = {k: v for k, v in kwargs.items() if k not in _RESERVED_KWARGS and k != "pretrained_cfg_overlay"}
    reason = ""
    try:
        dilated = _meta_model(
            name, features_only=True, out_indices=tuple(indices), output_stride=output_stride, **probe_kwargs
        )
    except (TypeError, AssertionError, ValueError) as exc:  # timm's ways of saying "no output_stride here"
        reason = f"timm: {type(exc).__name__}: {exc}" if str(exc) else f"timm: {type(exc).__name__}"
    else:
        reached = [int(r) for r in dilated.feature_info.reduction()]
        expected = [min(s, output_stride) for s in (2**k for k in range(1, 6)) if s >= expected_first][: len(indices)]
        if reached == expected:
            return
        reason = f"its features would come at strides {reached} instead of {expected}"
    raise InvalidInputError(
        f"timm model {name!r} cannot reach output stride {output_stride} ({reason}); allowed: 32."
    )


def create_timm_encoder(
    name: str,
    in_channels: int = 3,
    depth: int = 5,
    weights: str | bool | os.PathLike[str] | None = None,
    output_stride: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """The encoder for ``tu-<name>``: :class:`TimmUniversalEncoder` around timm model ``name``.

    Args:
        name: timm model name, optionally with a pretrained tag (``resnet18.a1_in1k``).
        in_channels: input channels (timm's ``in_chans``; pretrained first convs are adapted by timm).
        depth: number of features after the input, 1..5.
        weights: None (random), True/``"imagenet"``/a tag (timm download), or a local file path.
        output_stride: 32, or 8/16 for models timm can dilate.
        kwargs: passed on to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    return TimmUniversalEncoder(name, in_channels, depth, weights, output_stride, **kwargs)


def timm_pretrained_settings(name: str) -> PretrainedSettings:
    """Normalization of timm model ``name`` (its default or named tag) from timm's registry, offline."""
    import timm

    check_timm_name(name)
    if name.startswith(_SOURCE_PREFIXES):
        return PretrainedSettings()
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return PretrainedSettings()
    extra: dict[str, object] = {"source": "timm", "tag": cfg.tag, "input_size": cfg.input_size}
    return PretrainedSettings(
        repo_id=cfg.hf_hub_id or None,
        url=cfg.url or None,
        mean=tuple(float(m) for m in cfg.mean),
        std=tuple(float(s) for s in cfg.std),
        input_space="RGB",
        # timm's configs do not state a range: every timm model takes [0, 1] inputs.
        input_range=(0.0, 1.0),
        extra=extra,
    )
