"""CompressionConfig: the knobs of one compression, validated and JSON-serialisable."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace

from llmopt.errors import LlmoptError

SCOPES = ("layer", "global")
CALIBRATIONS = ("sequential", "one-pass")
PRECISIONS = ("fp32", "bf16", "fp16")
NM_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
MAX_M = 256  # group size of an N:M pattern; hardware uses 4 or 8, research up to 32 or 64
# The settings of each kind of compression (registry.KINDS): they act only when the kind is on.
KIND_SETTINGS = {
    "lowrank": ("lowrank_method",),
    "prune": ("sparsity_method", "sparsity_pattern", "sparsity_scope"),
    "quantize": ("quant_method", "group_size", "act_order", "asymmetric"),
    "kernel": ("smooth_alpha",),
}
CALIBRATION_SETTINGS = ("calibration", "calibration_samples")  # act only for calibrated methods
PATTERN_HELP = f"'unstructured', '2:4', '4:8' or any 'N:M' with 0 < N < M <= {MAX_M}"


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``None`` for ``unstructured``, else ``(n, m)``: keep n of every m consecutive weights.

    Raises:
        LlmoptError: a pattern that is neither ``unstructured`` nor ``N:M`` with 0 < N < M.
    """
    if pattern == "unstructured":
        return None
    match = NM_PATTERN.match(str(pattern))
    if not match:
        raise LlmoptError(f"sparsity_pattern {pattern!r} is not valid; allowed: {PATTERN_HELP}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m <= MAX_M:
        raise LlmoptError(
            f"sparsity_pattern {pattern!r} is not valid: N={n}, M={m} must satisfy "
            f"0 < N < M <= {MAX_M} (N weights are kept in every group of M); allowed: "
            f"{PATTERN_HELP}"
        )
    return n, m


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Calibration reads this many training texts at most. 4096 texts are ~300k tokens: the input
# covariance of even a 4096-wide layer is then well conditioned (many samples per dimension),
# so more only costs time; a larger number (1e30 was accepted) would calibrate for minutes to
# hours and gain nothing.
MAX_CALIBRATION_SAMPLES = 4096


@dataclass(frozen=True)
class CompressionConfig:
    """What to do to every targeted Linear layer; applied as low-rank -> prune -> quantize.

    With an N:M ``sparsity_pattern`` the sparsity is fixed at 1 - N/M (``effective_sparsity``)
    and the ``sparsity`` field is ignored (the report says so).
    """

    sparsity: float = 0.0  # 0 = no pruning: compression is opt-in, knob by knob
    sparsity_method: str = "magnitude"  # needs no data; wanda/sparsegpt need calibration texts
    sparsity_pattern: str = "unstructured"  # free choice of zeros; N:M is what sparse kernels run
    sparsity_scope: str = "layer"  # per-row ranking, as Wanda found best; "global" = magnitude
    bits: int | None = None  # None = keep float weights; 8 is near-lossless, 4 needs groups
    group_size: int | None = None  # None = one scale per output row: cheapest, coarsest
    quant_method: str = "rtn"  # needs no data; "gptq" needs calibration texts but holds 3 bits
    act_order: bool = False  # GPTQ only: columns by decreasing Hessian diagonal; off as in paper
    asymmetric: bool = False  # symmetric grids keep zeros free of offsets; asymmetric uses 2^b
    rank: int | None = None  # None = no factorisation; most layers are far from low-rank
    lowrank_method: str = "svd"  # needs no data; "activation-aware" needs calibration texts
    int8_dynamic: bool = False  # real int8 kernels change activations too: opt-in
    smooth_alpha: float | None = None  # SmoothQuant strength with int8_dynamic; 0.5 in the paper
    calibration: str = "sequential"  # as the reference code: blocks see compressed inputs
    calibration_samples: int = 128  # ~10k review tokens: a well-conditioned 1536-wide Hessian
    precision: str = "fp32"  # bf16/fp16 halve memory and run 16-bit kernels: opt-in
    include_head: bool = False  # the head is tiny and every logit passes through it: keep it

    def __post_init__(self) -> None:
        s = self.sparsity
        try:
            bad = isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(float(s))
        except OverflowError:  # an int beyond float range
            bad = True
        if bad:
            raise LlmoptError(f"sparsity must be a number in [0, 1), got {_short(s)}")
        if not 0.0 <= s < 1.0:
            raise LlmoptError(
                f"sparsity {s} is outside the allowed range [0, 1): it is the fraction of "
                "weights set to zero, e.g. 0.5"
            )
        object.__setattr__(self, "sparsity", float(s))
        from llmopt.compression import registry

        for kind in ("prune", "quantize", "lowrank"):
            registry.get(kind, getattr(self, registry.KINDS[kind].field))
        parse_pattern(self.sparsity_pattern)
        if self.sparsity_scope not in SCOPES:
            raise LlmoptError(
                f"sparsity_scope {self.sparsity_scope!r} is unknown; allowed: {', '.join(SCOPES)}"
            )
        if self.sparsity_scope == "global" and (
            self.sparsity_method != "magnitude" or self.sparsity_pattern != "unstructured"
        ):
            raise LlmoptError(
                "sparsity_scope 'global' ranks |w| across layers: it needs sparsity_method "
                "'magnitude' and sparsity_pattern 'unstructured' (use scope 'layer' otherwise)"
            )
        if self.bits is not None and (not _is_int(self.bits) or not 2 <= self.bits <= 8):
            raise LlmoptError(
                f"bits {self.bits!r} is outside the allowed range 2..8 (or None for float weights)"
            )
        if self.group_size is not None and (not _is_int(self.group_size) or self.group_size < 1):
            raise LlmoptError(
                f"group_size {self.group_size!r} must be a positive whole number (weights per "
                "scale, e.g. 64 or 128), or None for one scale per output channel"
            )
        for name in ("act_order", "asymmetric", "int8_dynamic", "include_head"):
            if not isinstance(getattr(self, name), bool):
                raise LlmoptError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.act_order and self.quant_method != "gptq":
            raise LlmoptError(
                "act_order orders the columns GPTQ quantizes: it needs quant_method 'gptq'"
            )
        if self.rank is not None and (not _is_int(self.rank) or self.rank < 1):
            raise LlmoptError(f"rank {self.rank!r} must be a whole number >= 1, or None")
        if self.bits is not None and self.int8_dynamic:
            raise LlmoptError(
                f"bits={self.bits} and int8_dynamic both quantize the weights: pick one "
                "(bits simulates 2..8-bit weights; int8_dynamic runs real int8 kernels)"
            )
        self._check_alpha()
        self._check_knobs(registry)
        n = self.calibration_samples
        if not _is_int(n) or not 1 <= n <= MAX_CALIBRATION_SAMPLES:
            raise LlmoptError(
                f"calibration_samples {n!r} must be a whole number >= 1 and at most "
                f"{MAX_CALIBRATION_SAMPLES}"
            )
        if self.calibration not in CALIBRATIONS:
            raise LlmoptError(
                f"calibration {self.calibration!r} is unknown; allowed: {', '.join(CALIBRATIONS)}"
            )
        if self.precision not in PRECISIONS:
            raise LlmoptError(
                f"precision {self.precision!r} is unknown; allowed: {', '.join(PRECISIONS)}"
            )
        if self.precision != "fp32" and (self.int8_dynamic or self.bits is not None):
            what = (
                "int8_dynamic runs int8 kernels on fp32 inputs"
                if self.int8_dynamic
                else (
                    f"bits={self.bits} simulates exact grid values, which "
                    f"{self.precision} would round"
                )
            )
            raise LlmoptError(
                f"precision {self.precision} cannot be combined here: {what}; "
                "use precision fp32 with it, or drop it"
            )
        if (
            self.prunes
            and self.sparsity_method == "sparsegpt"
            and self.bits is not None
            and self.quant_method == "gptq"
            and self.act_order
        ):
            raise LlmoptError(
                "SparseGPT prunes and GPTQ-quantizes in one pass over the columns in their "
                "order; act_order would reorder them: drop act_order"
            )

    def _check_alpha(self) -> None:
        a = self.smooth_alpha
        if a is None:
            return
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
            raise LlmoptError(
                f"smooth_alpha {a!r} must be a number in [0, 1] (how much of the activation "
                "range moves into the weights; 0.5 is the usual choice), or None"
            )
        if not self.int8_dynamic:
            raise LlmoptError(
                "smooth_alpha smooths activations for the int8 kernels: it needs int8_dynamic"
            )
        object.__setattr__(self, "smooth_alpha", float(a))

    def _check_knobs(self, registry) -> None:
        """The knobs methods declare (``registry.Knob``): each field's type and range."""
        default = {f.name: f.default for f in fields(self)}
        for _, knob in registry.knobs():
            if knob.field in default:  # a method of a newer config: the field is not here
                value = knob.check(getattr(self, knob.field), default[knob.field])
                object.__setattr__(self, knob.field, value)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(n, m)`` of an N:M pattern, ``None`` when unstructured."""
        return parse_pattern(self.sparsity_pattern)

    @property
    def effective_sparsity(self) -> float:
        """The fraction of weights pruning removes: 1 - N/M with a pattern, else ``sparsity``."""
        nm = self.nm
        return 1.0 - nm[0] / nm[1] if nm else self.sparsity

    @property
    def prunes(self) -> bool:
        """Whether pruning runs at all."""
        return self.effective_sparsity > 0.0

    @property
    def is_identity(self) -> bool:
        """True when nothing would change (no pruning, quantization or factorisation)."""
        return not (self.prunes or self.bits is not None or self.rank is not None) and not (
            self.int8_dynamic or self.precision != "fp32"
        )

    def describe(self) -> str:
        """A short human description, e.g. '50% magnitude pruning · 4-bit weights (group 64)'."""
        parts = []
        if self.prunes:
            pattern = "" if self.nm is None else f" {self.sparsity_pattern}"
            parts.append(f"{self.effective_sparsity:.0%}{pattern} {self.sparsity_method} pruning")
        if self.bits is not None:
            group = "per-channel" if self.group_size is None else f"group {self.group_size}"
            extra = "".join([", asymmetric" * self.asymmetric, ", act-order" * self.act_order])
            method = "" if self.quant_method == "rtn" else f"{self.quant_method} "
            parts.append(f"{method}{self.bits}-bit weights ({group}{extra})")
        if self.rank is not None:
            how = "" if self.lowrank_method == "svd" else f" {self.lowrank_method}"
            parts.append(f"rank {self.rank}{how}")
        if self.int8_dynamic:
            smooth = "" if self.smooth_alpha is None else f", smoothed α={self.smooth_alpha:g}"
            parts.append(f"int8 kernels{smooth}")
        if self.precision != "fp32":
            parts.append(f"{self.precision} compute")
        return " · ".join(parts) or "no compression"

    def acting(self) -> CompressionConfig:
        """This config with every setting that does nothing reset to its default: a method,
        group size or option of a kind that is off (e.g. ``quant_method`` without ``bits``),
        the sparsity an N:M pattern overrides, the calibration settings when no method
        measures activations, and a method's knobs (``registry.Knob``) when it is not
        selected. It compresses exactly as ``self`` does; recipes store it, so runs that did
        the same thing have the same recipe."""
        from llmopt.compression import registry

        default = {f.name: f.default for f in fields(self)}
        reset = {}
        for kind, names in KIND_SETTINGS.items():
            if not registry.KINDS[kind].active(self):
                reset.update({name: default[name] for name in names})
        if self.nm is not None:
            reset["sparsity"] = default["sparsity"]
        if not registry.needs_calibration(self):
            reset.update({name: default[name] for name in CALIBRATION_SETTINGS})
        for method, knob in registry.knobs():  # a method's own knobs act only while it runs
            if knob.field in default and not registry.acting_knob(self, method):
                reset[knob.field] = default[knob.field]
        return replace(self, **reset)

    def to_dict(self) -> dict:
        """Plain JSON-ready values of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CompressionConfig:
        """Build from ``to_dict`` output; missing keys take their defaults.

        Raises:
            LlmoptError: unknown keys or invalid values.
        """
        if not isinstance(d, dict):
            raise LlmoptError(f"a compression config is a JSON object, got {type(d).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(map(repr, set(d) - allowed))
        if unknown:
            raise LlmoptError(
                f"unknown compression settings {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**d)
