"""SMP's former encoder names that now live in timm (``timm-regnetx_002`` → ``tu-regnetx_002``).

SMP 0.6 dropped its own copies of these timm families and builds them through its
universal timm encoder instead: a name starting with one of :data:`TIMM_RENAMED_PREFIXES`
has ``timm-`` replaced by ``tu-``, and MobileNetV3 also gains timm's ``tf_`` prefix
(SMP's weights were the TensorFlow ports). The timm models keep the key names SMP's
copies had, so checkpoints saved with the old name load into the new one.
"""

from __future__ import annotations

import warnings

#: Old-name prefixes SMP 0.6 maps to ``tu-`` timm models (SMP's ``is_equivalent_to_timm_universal``).
TIMM_RENAMED_PREFIXES: tuple[str, ...] = (
    "timm-regnet",
    "timm-res2",
    "timm-resnest",
    "timm-mobilenetv3",
    "timm-gernet",
)
#: The segexport release in which the old names stop working (tests/test_renamed_encoders.py fails once it is reached).
REMOVED_IN = "1.0"


def renamed_encoder(name: str) -> str:
    """The current name for ``name``; unchanged where SMP never renamed it.

    A renamed name warns (DeprecationWarning, as SMP does) and names its replacement.
    """
    if not isinstance(name, str) or not name.startswith(TIMM_RENAMED_PREFIXES):
        return name
    # The same string edits as SMP's get_encoder, so every name maps exactly as it does there.
    new = name.replace("timm-", "tu-")
    if "mobilenetv3" in new:
        new = new.replace("tu-", "tu-tf_")
    warnings.warn(
        f"Encoder name {name!r} is deprecated (SMP's `timm-` encoders now come from timm) and will be removed in "
        f"segexport {REMOVED_IN}; use the `tu-` equivalent {new!r} instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    return new
