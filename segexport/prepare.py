"""Prepare an eager model for tracing: eval, multi-branch blocks reparameterised, BatchNorm folded, heads fused into one graph.

The prepared module returns a tuple with a fixed number of outputs (``mask`` and,
with an aux head, ``label``), so every exporter sees one static graph.
"""

from __future__ import annotations

import copy
import inspect
from typing import Protocol, runtime_checkable

import torch
from torch import nn


class ExportModule(nn.Module):
    """Wraps a segmentation model so that its outputs are always a tuple (mask[, label])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def output_names(model: nn.Module) -> tuple[str, ...]:
    """``("mask",)`` or ``("mask", "label")`` when the model has an aux head."""
    return ("mask", "label") if getattr(model, "classification_head", None) is not None else ("mask",)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[int, object]:
    """Fold every eval-mode BatchNorm2d that directly consumes a Conv2d's output into that conv.

    Pairs are found by running ``example`` once with hooks (so any module structure
    works, not only Sequential); a conv whose output feeds anything else as well is
    left alone. Returns the number of folded pairs and the model's output on
    ``example`` before folding (what the folded model must still give).
    """
    producers: dict[int, nn.Conv2d] = {}
    consumers: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # conv outputs kept alive so no tensor id is reused mid-run
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d, int]] = []
    names = {m: n for n, m in model.named_modules()}

    def pre_hook(module: nn.Module, args: tuple) -> None:
        for a in args:
            if isinstance(a, torch.Tensor) and id(a) in producers:
                consumers[id(a)] = consumers.get(id(a), 0) + 1
        if isinstance(module, nn.BatchNorm2d) and args and id(args[0]) in producers:
            pairs.append((producers[id(args[0])], module, id(args[0])))

    def conv_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        producers[id(output)] = module  # type: ignore[assignment]
        alive.append(output)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(pre_hook) for m in leaves]
    handles += [m.register_forward_hook(conv_hook) for m in leaves if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            unfolded = model(example)
    finally:
        for h in handles:
            h.remove()
    folded = 0
    seen: set[int] = set()
    for conv, bn, tensor_id in pairs:
        if id(conv) in seen or bn.training or not bn.track_running_stats or bn.running_var is None:
            continue
        if consumers.get(tensor_id, 0) != 1 or sum(1 for c, _, _ in pairs if c is conv) > 1:
            continue  # the conv output is used elsewhere too, or the conv runs more than once
        _fold_into(conv, bn)
        _replace_module(model, names[bn], nn.Identity())
        seen.add(id(conv))
        folded += 1
    return folded, unfolded


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        new_bias = bias * scale + shift
        conv.bias = nn.Parameter(new_bias)


def _replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@runtime_checkable
class Reparameterizable(Protocol):
    """A block with a training-time form (parallel branches) and an equivalent inference form.

    ``reparameterize()`` switches the block, in place and for good, to the inference form
    (MobileOne, RepVGG: the branches become one convolution); the eval-mode output must
    not change. timm's reparameterisable blocks (``tu-fastvit_*``, ``tu-repvgg_*``,
    ``tu-mobileone_*``) offer the same method and take part too.
    """

    def reparameterize(self) -> None: ...


def reparameterize_blocks(model: nn.Module) -> int:
    """Call ``reparameterize()`` on every block of ``model`` that offers it (in place); returns how many.

    A ``reparameterize`` that needs arguments (a VAE's sampling step, say) is some other
    method of the same name and is left alone.
    """
    blocks = [m for m in model.modules() if m is not model and isinstance(m, Reparameterizable)]
    blocks = [m for m in blocks if _takes_no_arguments(m.reparameterize)]
    for block in blocks:
        block.reparameterize()
    return len(blocks)


def _takes_no_arguments(method: object) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def prepare_for_export(
    model: nn.Module, example: torch.Tensor, fold_bn: bool = True, reparameterize: bool = True
) -> ExportModule:
    """An eval-mode copy of ``model`` with reparameterised blocks and folded BatchNorm, wrapped to return a fixed tuple.

    ``model`` itself is not touched: it stays the multi-branch eager reference the parity check compares against.
    """
    prepared = _reparameterized_copy(model, reparameterize)
    if fold_bn:
        # The hook pass's own output is the unfolded answer, so checking the fold costs one more forward, not two.
        _, unfolded = fold_batchnorm(prepared, example)
        before = unfolded if isinstance(unfolded, (tuple, list)) else (unfolded,)
        # Folding is an algebraic identity; if hooks misread a functional use, keep the unfolded copy.
        with torch.no_grad():
            after = ExportModule(prepared)(example)
        if any(not torch.allclose(a, b, atol=1e-4, rtol=1e-3) for a, b in zip(before, after, strict=True) if a.is_floating_point()):
            prepared = _reparameterized_copy(model, reparameterize)
    return ExportModule(prepared).eval()


def _reparameterized_copy(model: nn.Module, reparameterize: bool) -> nn.Module:
    prepared = copy.deepcopy(model).eval()
    for p in prepared.parameters():
        p.requires_grad_(False)
    if reparameterize:
        reparameterize_blocks(prepared)
    return prepared
