"""The shared forward pass: encoder → decoder → segmentation head (+ aux head).

An architecture only builds its decoder and heads; running them lives here once,
and so does what SMP's models offer around it: the constructor arguments as
``config`` (what ``save_pretrained`` writes), encoder freezing, and the
``_is_torch_*`` capability flags.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from segexport.checks import check_int
from segexport.errors import InputShapeError, InvalidInputError

from .export_mode import is_exporting

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

M = TypeVar("M", bound="SegmentationModel")

#: The segexport version that drops the deprecated SMP keywords (decoder_use_batchnorm, ...).
DEPRECATED_KEYWORDS_REMOVAL = "0.3.0"


class SegmentationModel(nn.Module):
    """Base of every architecture.

    Subclasses set ``encoder``, ``decoder``, ``segmentation_head`` and
    ``classification_head`` (None without ``aux_params``), then call
    :meth:`initialize`. ``forward`` returns the mask, or ``(mask, label)``
    when there is an aux head.

    The arguments a model was built with are recorded before ``__init__`` runs
    (SMP's ``config``), so every architecture, user-registered ones included,
    can be saved with :meth:`save_pretrained` and rebuilt by ``from_pretrained``.
    """

    # SMP's capability flags, read by code that decides whether to script/compile/export a model.
    _is_torch_scriptable: bool = True
    _is_torch_exportable: bool = True
    _is_torch_compilable: bool = True

    #: False when the decoder resizes features itself and any H, W works.
    requires_divisible_input_shape: bool = True
    #: Targets this architecture cannot be exported to, with the reason (declared, not discovered).
    unsupported_targets: dict[str, str] = {}
    # Properties TorchScript must not compile (they are Python-side only).
    __jit_unused_properties__ = ["config", "required_stride"]
    #: Constructor arguments SMP's class of the same name does not take: ``save_pretrained`` leaves
    #: them out of config.json while they hold their default, so that SMP can read the file.
    segexport_only_arguments: tuple[str, ...] = ()

    # No class-level annotations of encoder/decoder/heads: TorchScript reads them as attribute types.

    def __new__(cls: type[M], *args: Any, **kwargs: Any) -> M:
        instance = super().__new__(cls)
        # object.__setattr__: nn.Module.__init__ has not run yet.
        object.__setattr__(instance, "_init_config", _bind_init_arguments(cls, args, kwargs))
        return instance

    def __init__(self) -> None:
        super().__init__()
        self._is_encoder_frozen = False

    @property
    def config(self) -> dict[str, Any]:
        """Every constructor argument (defaults included) the model was built with, as SMP's ``config``."""
        return dict(self._init_config)

    def initialize(self) -> None:
        """Random init of decoder and heads (the encoder keeps its own)."""
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)
        if self.classification_head is not None:
            initialize_head(self.classification_head)

    @property
    def required_stride(self) -> int:
        """H and W must be multiples of this (1 when any size works)."""
        return int(self.encoder.output_stride) if self.requires_divisible_input_shape else 1

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a clear error (an :class:`InputShapeError`, a RuntimeError as in SMP) when H or W does not fit."""
        stride = self.required_stride
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % stride or w % stride:
            raise InputShapeError(
                f"Input size {h}x{w} is not divisible by {stride}, the stride this model needs; "
                f"nearest sizes that work: {_nearest_multiples(h, stride)} x {_nearest_multiples(w, stride)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # Nested ifs: TorchScript skips a branch guarded by is_scripting() alone, not a compound condition.
        if not torch.jit.is_scripting():
            if not is_exporting():
                self.check_input_shape(x)
        features = self.encoder(x)
        mask = self.segmentation_head(self.decoder(features))
        if self.classification_head is not None:
            return mask, self.classification_head(features[-1])
        return mask

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode forward under inference mode, as SMP's ``predict``."""
        if self.training:
            self.eval()
        return self(x)

    # ------------------------------------------------------------------ loading weights

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict``; with ``strict=False``, tensors of the wrong shape are skipped with a warning.

        That is SMP's behaviour, what fine-tuning a checkpoint with other ``classes`` relies on.
        """
        strict = kwargs.get("strict", args[0] if args else True)
        if not strict:
            own = self.state_dict()
            mismatched = [
                (key, tuple(value.shape), tuple(own[key].shape))
                for key, value in state_dict.items()
                if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
            ]
            if mismatched:
                skipped = {key for key, _, _ in mismatched}
                state_dict = {k: v for k, v in state_dict.items() if k not in skipped}
                lines = "\n".join(f" - {key}: {theirs} (weights) -> {ours} (model)" for key, theirs, ours in mismatched)
                warnings.warn(
                    f"{len(mismatched)} tensors have another shape than the model's and were not loaded; "
                    f"train the model before using it:\n{lines}",
                    UserWarning,
                    stacklevel=2,
                )
        return super().load_state_dict(state_dict, *args, **kwargs)

    # ------------------------------------------------------------------ encoder freezing (SMP API)

    def train(self: M, mode: bool = True) -> M:
        """``nn.Module.train``, except that a frozen encoder stays in eval mode (see :meth:`freeze_encoder`)."""
        if not isinstance(mode, bool):
            raise InvalidInputError(f"train(mode) takes a bool; got {mode!r}.")
        self.training = mode
        for name, module in self.named_children():
            if name == "encoder" and getattr(self, "_is_encoder_frozen", False):
                continue
            module.train(mode)
        return self

    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients for its parameters, its norm layers' statistics frozen.

        ``model.train()`` keeps the frozen encoder in eval mode until :meth:`unfreeze_encoder`.
        """
        self._set_encoder_trainable(False)

    def unfreeze_encoder(self) -> None:
        """Undo :meth:`freeze_encoder`: gradients back on, norm layers follow the model's train/eval mode."""
        self._set_encoder_trainable(True)

    def _set_encoder_trainable(self, mode: bool) -> None:
        for param in self.encoder.parameters():
            param.requires_grad = mode
        for module in self.encoder.modules():
            # _NormBase: the batch and instance norms that track running statistics.
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.train(mode and self.training)
        self._is_encoder_frozen = not mode

    # ------------------------------------------------------------------ SMP's save format

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        model_card_kwargs: Mapping[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``config.json`` (``_model_class`` and every constructor argument), ``model.safetensors``
        and a model card into ``save_directory``, in SMP's format: ``smp.from_pretrained`` reads it.

        With ``push_to_hub=True`` the folder is then uploaded to ``repo_id`` (default: the folder's
        name); returns the commit URL then, else None.
        """
        from segexport.pretrained import save_pretrained

        return save_pretrained(
            self,
            save_directory,
            push_to_hub=push_to_hub,
            repo_id=repo_id,
            metrics=metrics,
            dataset=dataset,
            model_card_kwargs=model_card_kwargs,
            **push_to_hub_kwargs,
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save the model in SMP's format and upload it to the Hugging Face Hub repo ``repo_id``.

        Keyword arguments are those of SMP's (huggingface_hub's) ``push_to_hub``: ``commit_message``,
        ``private``, ``token``, ``branch``, ``create_pr``, ``allow_patterns``, ``ignore_patterns``,
        ``delete_patterns``, ``model_card_kwargs``. Returns the commit URL.
        """
        from segexport.pretrained import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The README.md ``save_pretrained`` writes (``metrics`` and ``dataset`` keywords as in SMP)."""
        from segexport.pretrained import model_card

        return model_card(self, metrics=kwargs.get("metrics"), dataset=kwargs.get("dataset"))

    @classmethod
    def from_pretrained(
        cls: type[M],
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        strict: bool = True,
        revision: str | None = None,
        **overrides: Any,
    ) -> M:
        """The model saved in a folder or hub repo by ``save_pretrained`` (ours or SMP's), in eval mode.

        ``overrides`` replace constructor arguments of the saved config (e.g. ``classes=5`` with
        ``strict=False`` to fine-tune on other classes). On a subclass, the saved model must be of
        that class.
        """
        from segexport.pretrained import load_pretrained

        model = load_pretrained(pretrained_model_name_or_path, strict=strict, revision=revision, **overrides)
        if cls is not SegmentationModel and not isinstance(model, cls):
            raise InvalidInputError(
                f"{str(pretrained_model_name_or_path)!r} holds a {type(model).__name__}, not a {cls.__name__}; "
                "load it with segexport.from_pretrained (any architecture)."
            )
        return model  # type: ignore[return-value]

    @classmethod
    def complete_saved_arguments(
        cls, arguments: dict[str, Any], weight_keys: Callable[[], Iterable[str]]
    ) -> dict[str, Any]:
        """Fill in arguments a saved config.json lacks (SMP records no such argument) from its weights' keys.

        ``weight_keys`` lists the saved state_dict's keys (read only when called). The base
        class has nothing to fill in.
        """
        return arguments

    # ------------------------------------------------------------------ deprecated SMP keywords

    def _renamed_keyword(self, kwargs: dict[str, Any], old: str, new: str, current: Any) -> Any:
        """Pop SMP's deprecated keyword ``old`` from ``kwargs``; its value (with a DeprecationWarning), else ``current``.

        The recorded config names ``new`` only, so a saved model loads without the warning.
        """
        value = kwargs.pop(old, None)
        if value is None:
            return current
        warnings.warn(
            f"{type(self).__name__}: {old} is deprecated (an old SMP name); use {new}={value!r} instead. "
            f"{old} will be removed in segexport {DEPRECATED_KEYWORDS_REMOVAL}.",
            DeprecationWarning,
            stacklevel=3,
        )
        self._init_config.pop(old, None)
        self._init_config[new] = value
        return value


@functools.lru_cache(maxsize=None)
def _init_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.__init__)


def _bind_init_arguments(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{name: value}`` of every ``__init__`` argument, defaults filled in, ``**kwargs`` flattened (as SMP's config)."""
    signature = _init_signature(cls)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return {}  # __init__ itself reports the bad call
    bound.apply_defaults()
    config: dict[str, Any] = {}
    for index, (name, param) in enumerate(signature.parameters.items()):
        if index == 0 or param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        value = bound.arguments.get(name)
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value or {})
        else:
            config[name] = value
    return config


def _nearest_multiples(size: int, stride: int) -> str:
    low, high = (size // stride) * stride, (size // stride + 1) * stride
    if size % stride == 0:
        return str(size)
    return f"{high}" if low == 0 else f"{low} or {high}"


def initialize_decoder(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def initialize_head(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def check_common_args(
    arch: str,
    *,
    classes: int,
    in_channels: int,
    encoder_depth: int,
    allowed_depths: Sequence[int],
) -> None:
    """Validate the arguments every architecture shares, with messages that say what is allowed."""
    check_int("classes", classes)
    check_int("in_channels", in_channels)
    if encoder_depth not in allowed_depths:
        raise InvalidInputError(
            f"encoder_depth {encoder_depth!r} is out of range for {arch}; allowed: "
            f"{', '.join(str(d) for d in allowed_depths)}."
        )


def check_decoder_channels(arch: str, decoder_channels: Sequence[int], encoder_depth: int) -> None:
    """decoder_channels needs one entry per decoder stage, i.e. ``encoder_depth`` entries."""
    if len(decoder_channels) != encoder_depth:
        raise InvalidInputError(
            f"decoder_channels {tuple(decoder_channels)!r} has {len(decoder_channels)} entries but {arch} "
            f"with encoder_depth={encoder_depth} needs exactly {encoder_depth}."
        )
