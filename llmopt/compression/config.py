"""CompressionConfig: the knobs of one compression, validated and JSON-serialisable."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from llmopt.errors import Fix, LlmoptError

SCOPES = ("layer", "global")
CALIBRATIONS = ("sequential", "one-pass")
PRECISIONS = ("fp32", "bf16", "fp16")
NM_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
MAX_M = 256  # group size of an N:M pattern; hardware uses 4 or 8, research up to 32 or 64
# The settings of each kind of compression (registry.KINDS): they act only when the kind is on.
KIND_SETTINGS = {
    "lowrank": ("lowrank_method", "rank_allocation"),
    "prune": (
        "sparsity_method",
        "sparsity_pattern",
        "sparsity_scope",
        "sparsity_allocation",
        "owl_lambda",
        "owl_m",
    ),
    "quantize": ("quant_method", "group_size", "act_order", "asymmetric", "bits_allocation"),
    "kernel": ("smooth_alpha",),
}
CALIBRATION_SETTINGS = ("calibration", "calibration_samples")  # act only for calibrated methods
# What a per-layer rule (``CompressionConfig.layers``) may set for the layers it matches.
LAYER_KEYS = ("sparsity", "bits", "group_size", "rank", "skip")
LayerRules = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # ((pattern, ((key, v), …)), …)
# How the bits budget is spread over the matrices: "uniform" (every matrix at ``bits``) or
# "sensitivity" (each matrix's bits from its measured sensitivity, ``bits`` the average).
BITS_ALLOCATIONS = ("uniform", "sensitivity")
# How the rank budget is spread: "uniform" (every matrix at ``rank``) or "energy" (each
# matrix keeps the same fraction of its spectrum's energy, as many factor weights in all).
RANK_ALLOCATIONS = ("uniform", "energy")
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


class LayerRuleError(LlmoptError):
    """A per-layer rule or skip pattern that cannot be used (its message names the pattern)."""


def specificity(pattern: str) -> int:
    """How specific a layer-name pattern is: its characters that are not wildcards.

    ``*`` and ``?`` count 0, a ``[...]`` character class counts 0 (it stands for one
    character of a set); every other character counts 1. ``transformer.h.0.attn.c_attn``
    scores 27, ``*.attn.*`` 6, ``*`` 0.
    """
    score, i = 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end != -1:  # a class (an unclosed '[' is a literal, as fnmatch reads it)
                i = end + 1
                continue
        score += ch not in "*?"
        i += 1
    return score


def matches(pattern: str, name: str) -> bool:
    """Whether a layer-name pattern (``fnmatch``, case-sensitive) matches ``name``."""
    return fnmatch.fnmatchcase(name, pattern)


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
    # How the pruning budget is spread over the blocks: "uniform" (every layer at sparsity), or
    # a registered allocation ("owl": blocks with more activation outliers pruned less, the
    # same average); owl_lambda bounds the spread, owl_m says what an outlier is (OWL paper).
    sparsity_allocation: str = "uniform"
    owl_lambda: float = 0.08  # the paper's value for LLaMA at 70%
    owl_m: float = 5.0  # an outlier's score is above owl_m times its block's mean
    # "sensitivity": bits is the average bits per weight (it may be fractional, e.g. 3.5) and
    # each matrix takes 2..8 bits from its sensitivity measured on validation rows of the
    # training split (an exact knapsack: llmopt.allocation.allocate_bits)
    bits_allocation: str = "uniform"
    # "energy": each matrix's rank keeps the same share of its singular-value energy, with
    # the factor weights of the uniform rank in all (llmopt.allocation.allocate_ranks)
    rank_allocation: str = "uniform"
    # Per-layer rules: {pattern: {"sparsity"|"bits"|"group_size"|"rank"|"skip": value}}, kept
    # as ((pattern, ((key, value), …)), …); see ``layer_config`` for which rule a layer takes.
    layers: LayerRules | Mapping[str, Mapping[str, Any]] = ()
    skip: tuple[str, ...] = ()  # layer-name patterns left exactly as they are

    def __post_init__(self) -> None:
        self._check_layers()
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
        self._check_bits()
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
        self._check_rank_allocation()
        self._check_allocation(registry)
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

    def _check_bits(self) -> None:
        """``bits``: a whole number 2..8; with a bits allocation, an average in [2, 8]."""
        b, allocated = self.bits, self.bits_allocation != "uniform"
        if self.bits_allocation not in BITS_ALLOCATIONS:
            raise LlmoptError(
                f"bits_allocation {_short(self.bits_allocation)} is unknown; allowed: "
                f"{', '.join(BITS_ALLOCATIONS)}"
            )
        if b is None:
            return
        number = not isinstance(b, bool) and isinstance(b, (int, float)) and math.isfinite(b)
        if number and allocated and not _is_int(b) and float(b).is_integer():
            b = int(b)  # an average of 4.0 is 4
        if number and not allocated and not _is_int(b) and not float(b).is_integer():
            raise LlmoptError(
                f"bits {b!r} is not a whole number: a fractional average needs "
                "bits_allocation 'sensitivity'"
            )
        if (not number or not 2 <= b <= 8) and allocated:
            raise LlmoptError(
                f"bits {_short(b)} must be an average bits per weight in [2, 8] with "
                f"bits_allocation {self.bits_allocation!r} (or None for float weights)"
            )
        if not allocated and (not number or not _is_int(b) or not 2 <= b <= 8):
            raise LlmoptError(
                f"bits {b!r} is outside the allowed range 2..8 (or None for float weights)"
            )
        object.__setattr__(self, "bits", b)
        if not allocated:
            return
        if (
            self.rank is not None
            or self.include_head
            or any("bits" in r or "rank" in r for r in self.rules.values())
        ):
            raise LlmoptError(
                f"bits_allocation {self.bits_allocation!r} measures each block matrix quantized "
                "alone and sets its bits: it needs no rank, no include_head and no per-layer "
                "rule setting bits or rank"
            )

    def _check_rank_allocation(self) -> None:
        if self.rank_allocation not in RANK_ALLOCATIONS:
            raise LlmoptError(
                f"rank_allocation {_short(self.rank_allocation)} is unknown; allowed: "
                f"{', '.join(RANK_ALLOCATIONS)}"
            )
        if self.rank_allocation == "uniform":
            return
        if any("rank" in r for r in self.rules.values()):
            raise LlmoptError(
                f"rank_allocation {self.rank_allocation!r} sets each matrix's rank: per-layer "
                "rules may set sparsity, bits, group size or skip, not rank"
            )
        if self.bits is not None and self.group_size is not None:
            raise LlmoptError(
                f"rank_allocation {self.rank_allocation!r} gives matrices ranks that a group "
                "size need not divide: leave group_size unset (per-channel scales) with it"
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

    def _check_allocation(self, registry) -> None:
        allowed = ["uniform", *registry.allocations()]
        if self.sparsity_allocation not in allowed:
            raise LlmoptError(
                f"sparsity_allocation {self.sparsity_allocation!r} is unknown; allowed: "
                f"{', '.join(allowed)}"
            )
        lam, m = self.owl_lambda, self.owl_m
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam <= 0.5:
            raise LlmoptError(
                f"owl_lambda {lam!r} must be a number in [0, 0.5] (the block sparsities span "
                "at most twice it; the paper uses 0.08)"
            )
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 1 <= m <= 1000:
            raise LlmoptError(
                f"owl_m {m!r} must be a number in [1, 1000] (an outlier's score is above owl_m "
                "times its block's mean; the paper uses 5)"
            )
        object.__setattr__(self, "owl_lambda", float(lam))
        object.__setattr__(self, "owl_m", float(m))
        if self.sparsity_allocation == "uniform":
            return
        if self.nm is not None or self.sparsity_scope != "layer":
            raise LlmoptError(
                f"sparsity_allocation {self.sparsity_allocation!r} sets each block's sparsity: "
                "it needs sparsity_pattern 'unstructured' and sparsity_scope 'layer'"
            )
        if any("sparsity" in rule for rule in self.rules.values()):
            raise LlmoptError(
                f"sparsity_allocation {self.sparsity_allocation!r} sets each block's sparsity: "
                "per-layer rules may set bits, group size, rank or skip, not sparsity"
            )

    def _check_knobs(self, registry) -> None:
        """The knobs methods declare (``registry.Knob``): each field's type and range."""
        default = {f.name: f.default for f in fields(self)}
        for _, knob in registry.knobs():
            if knob.field in default:  # a method of a newer config: the field is not here
                value = knob.check(getattr(self, knob.field), default[knob.field])
                object.__setattr__(self, knob.field, value)

    def _check_layers(self) -> None:
        """Normalise ``layers``/``skip`` to tuples and check every rule: known keys, each value
        in its range (as the uniform field's), and a combination the config accepts."""
        rules = self.layers
        if isinstance(rules, Mapping):
            pairs = list(rules.items())
        elif isinstance(rules, (list, tuple)) and all(
            isinstance(r, (list, tuple)) and len(r) == 2 for r in rules
        ):
            pairs = [(p, dict(v) if isinstance(v, (list, tuple)) else v) for p, v in rules]
        else:
            raise LayerRuleError(
                "layers must be an object {pattern: {setting: value}}, got "
                f"{type(rules).__name__}"
            )
        seen: set[str] = set()
        normal = []
        for pattern, rule in pairs:
            if not isinstance(pattern, str) or not pattern.strip():
                raise LayerRuleError(f"layer pattern {_short(pattern)} must be non-empty text")
            if pattern in seen:
                raise LayerRuleError(f"layer pattern {pattern!r} is given twice")
            seen.add(pattern)
            if not isinstance(rule, Mapping):
                raise LayerRuleError(
                    f"layer pattern {pattern!r}: its settings must be an object such as "
                    f'{{"bits": 8}}, got {type(rule).__name__}'
                )
            unknown = sorted(map(repr, set(rule) - set(LAYER_KEYS)))
            if unknown:
                raise LayerRuleError(
                    f"layer pattern {pattern!r}: unknown setting {', '.join(unknown)}; "
                    f"allowed: {', '.join(LAYER_KEYS)}"
                )
            if not rule:
                raise LayerRuleError(
                    f"layer pattern {pattern!r} sets nothing; give one of {', '.join(LAYER_KEYS)}"
                )
            if "skip" in rule and not isinstance(rule["skip"], bool):
                raise LayerRuleError(
                    f"layer pattern {pattern!r}: skip must be true or false, got "
                    f"{_short(rule['skip'])}"
                )
            normal.append((pattern, tuple((k, rule[k]) for k in LAYER_KEYS if k in rule)))
        skip = self.skip
        if isinstance(skip, str) or not isinstance(skip, (list, tuple)):
            raise LayerRuleError(f"skip must be a list of layer-name patterns, got {_short(skip)}")
        for pattern in skip:
            if not isinstance(pattern, str) or not pattern.strip():
                raise LayerRuleError(f"skip pattern {_short(pattern)} must be non-empty text")
        object.__setattr__(self, "layers", tuple(normal))
        object.__setattr__(self, "skip", tuple(dict.fromkeys(skip)))
        if not normal:
            return
        uniform = replace(self, layers=(), skip=())
        for pattern, rule in normal:
            try:
                _override(uniform, dict(rule))
            except LlmoptError as exc:
                raise LayerRuleError(f"layer pattern {pattern!r}: {exc.message}") from None

    @property
    def rules(self) -> dict[str, dict[str, Any]]:
        """The per-layer rules as ``{pattern: {setting: value}}``, in the order given."""
        rules = self.layers
        pairs = rules.items() if isinstance(rules, Mapping) else rules
        return {p: dict(r) for p, r in pairs}

    @property
    def uniform(self) -> CompressionConfig:
        """This config without its per-layer rules and skip patterns."""
        if not self.layers and not self.skip:
            return self
        return replace(self, layers=(), skip=())

    def rule_for(self, name: str) -> str | None:
        """The pattern of the rule layer ``name`` takes, or None (the uniform settings).

        Among the rules whose pattern matches ``name`` (``fnmatch``, case-sensitive), the most
        specific wins: the pattern with the most characters that are not wildcards
        (``specificity``: ``*``, ``?`` and ``[...]`` count 0); between equally specific
        patterns, the one listed first. Only the winning rule applies: settings it does not
        name take the uniform value, not another matching rule's.
        """
        best, best_score = None, -1
        for pattern in self.rules:
            if matches(pattern, name) and specificity(pattern) > best_score:
                best, best_score = pattern, specificity(pattern)
        return best

    def skips(self, name: str) -> bool:
        """Whether layer ``name`` is left as it is: a skip pattern matches it, or the rule it
        takes says ``skip: true``."""
        if any(matches(p, name) for p in self.skip):
            return True
        rule = self.rule_for(name)
        return bool(rule is not None and self.rules[rule].get("skip"))

    def layer_config(self, name: str) -> CompressionConfig | None:
        """The uniform config layer ``name`` is compressed with (its rule's settings over this
        config's), or None when it is skipped."""
        if self.skips(name):
            return None
        rule = self.rule_for(name)
        uniform = self.uniform
        return uniform if rule is None else _override(uniform, self.rules[rule])

    def variants(self) -> list[CompressionConfig]:
        """The uniform configs this one may apply somewhere: its own settings, then each rule's
        (skip rules excluded). A config without rules has one: itself."""
        uniform = self.uniform
        rules = [r for r in self.rules.values() if not r.get("skip")]
        return [uniform, *(_override(uniform, r) for r in rules)]

    def uses(self, kind: str) -> bool:
        """Whether some layer may be compressed by ``kind`` (a ``registry.KINDS`` name)."""
        from llmopt.compression import registry

        return any(registry.KINDS[kind].active(v) for v in self.variants())

    def check_layer_names(self, names: list[str], where: str = "the model") -> None:
        """Fail when a rule or skip pattern matches none of ``names`` (the layers compression
        targets): a typo would otherwise silently compress everything uniformly.

        Raises:
            LayerRuleError: naming the first such pattern and a few layer names.
        """
        patterns = [("layer", p) for p in self.rules] + [("skip", p) for p in self.skip]
        for kind, pattern in patterns:
            if not any(matches(pattern, n) for n in names):
                shown = ", ".join(repr(n) for n in names[:3]) + (" …" if len(names) > 3 else "")
                raise LayerRuleError(
                    f"{kind} pattern {pattern!r} matches no layer that compression targets in "
                    f"{where} ({len(names)} layers, named like {shown or '(none)'}); in a "
                    "pattern * matches any text, dots included",
                    fix=Fix(
                        cli="correct the pattern, or, for a recipe made on another model, pass "
                        "that model with --model (a recipe file holds no model)",
                        app="correct the pattern in the per-layer rules",
                    ),
                )

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
        """True when nothing would change (no pruning, quantization or factorisation), in any
        layer."""
        if self.layers or self.skip:
            return all(v.is_identity for v in self.variants())
        return not (self.prunes or self.bits is not None or self.rank is not None) and not (
            self.int8_dynamic or self.precision != "fp32"
        )

    def describe(self) -> str:
        """A short human description, e.g. '50% magnitude pruning · 4-bit weights (group 64)'."""
        parts = []
        if self.prunes:
            pattern = "" if self.nm is None else f" {self.sparsity_pattern}"
            parts.append(f"{self.effective_sparsity:.0%}{pattern} {self.sparsity_method} pruning")
            if self.sparsity_allocation != "uniform":
                parts[-1] += (
                    f" ({self.sparsity_allocation.upper()} per block, λ={self.owl_lambda:g}, "
                    f"M={self.owl_m:g})"
                )
        if self.bits is not None:
            group = "per-channel" if self.group_size is None else f"group {self.group_size}"
            extra = "".join([", asymmetric" * self.asymmetric, ", act-order" * self.act_order])
            method = "" if self.quant_method == "rtn" else f"{self.quant_method} "
            if self.bits_allocation == "uniform":
                parts.append(f"{method}{self.bits}-bit weights ({group}{extra})")
            else:
                parts.append(
                    f"{method}{self.bits:g} average bits ({self.bits_allocation}-allocated, "
                    f"{group}{extra})"
                )
        if self.rank is not None:
            how = "" if self.lowrank_method == "svd" else f" {self.lowrank_method}"
            spread = f" {self.rank_allocation}-allocated" * (self.rank_allocation != "uniform")
            parts.append(f"rank {self.rank}{how}{spread}")
        if self.int8_dynamic:
            smooth = "" if self.smooth_alpha is None else f", smoothed α={self.smooth_alpha:g}"
            parts.append(f"int8 kernels{smooth}")
        if self.precision != "fp32":
            parts.append(f"{self.precision} compute")
        text = " · ".join(parts) or "no compression"
        if self.layers or self.skip:
            text += " · " + self._describe_layers()
        return text

    def _describe_layers(self) -> str:
        """The per-layer rules in a few words, e.g. "layers '*.0.*': 8-bit; skip '*.fc2'"."""
        parts = []
        for pattern, rule in self.rules.items():
            said = []
            for key, value in rule.items():
                if key == "skip":
                    said.append("skipped" if value else "not skipped")
                elif key == "sparsity":
                    said.append(f"{value:.0%} sparsity")
                elif key == "bits":
                    said.append("float" if value is None else f"{value}-bit")
                elif key == "group_size":
                    said.append("per-channel" if value is None else f"group {value}")
                else:
                    said.append("full rank" if value is None else f"rank {value}")
            parts.append(f"{pattern!r}: {', '.join(said)}")
        text = f"layers {'; '.join(parts)}" if parts else ""
        if self.skip:
            text += ("; " if text else "") + "skip " + ", ".join(map(repr, self.skip))
        return text

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
            if not self.uses(kind):
                reset.update({name: default[name] for name in names})
        if self.nm is not None:
            reset["sparsity"] = default["sparsity"]
        if not registry.needs_calibration(self):
            reset.update({name: default[name] for name in CALIBRATION_SETTINGS})
        if self.sparsity_allocation == "uniform":  # the allocation's own settings act with it
            reset.update({name: default[name] for name in ("owl_lambda", "owl_m")})
        for method, knob in registry.knobs():  # a method's own knobs act only while it runs
            if knob.field in default and not registry.acting_knob(self, method):
                reset[knob.field] = default[knob.field]
        return replace(self, **reset)

    def to_dict(self) -> dict:
        """Plain JSON-ready values of every field; ``layers`` as ``{pattern: {setting: value}}``
        and ``skip`` as a list, both left out when empty (so a uniform config's dict is the
        one earlier versions stored)."""
        d = asdict(replace(self, layers=(), skip=()))
        del d["layers"], d["skip"]
        if self.layers:
            d["layers"] = self.rules
        if self.skip:
            d["skip"] = list(self.skip)
        return d

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


def _override(uniform: CompressionConfig, rule: Mapping[str, Any]) -> CompressionConfig:
    """``uniform`` with a rule's settings (``skip`` aside); validated as any config is."""
    return replace(uniform, **{k: v for k, v in rule.items() if k != "skip"})
