"""Shared model builders, data loading and helpers for the anchor scripts.

Every builder returns a `Model` with a uniform interface over zuko, nflows and
normflows:

    m.module       torch.nn.Module holding all parameters (give it to Adam)
    m.log_prob(x)  -> (N,) log-density of data x (data -> base direction)
    m.sample(n)    -> (n, D) samples (base -> data direction)
    m.recipe       human-readable description of how the model was built

Conventions used throughout (so the Rust side can match them):
  * "data -> base" is the density direction. Coupling / MAF layers compute
    their parameters from the *data-side* input in that direction (one network
    evaluation per layer for log_prob).  IAF is the inverse: one network
    evaluation per layer for sampling, D sequential evaluations for log_prob.
  * All MLP conditioners use ReLU and no normalisation / dropout / residuals.
  * Base distribution: standard normal N(0, I), not trainable.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
# flowspec: the repository carries the same data files in runtime/data (byte-identical).
SHARED_DATA = os.environ.get("FLOWSPEC_BENCH_DATA") or os.path.normpath(
    os.path.join(HERE, "..", "..", "runtime", "data"))

LIBS = ("zuko", "nflows", "normflows")
SPLINE_BOUND = 5.0  # spline domain [-B, B], identity (linear tails) outside


# ------------------------------------------------------------------ helpers
def set_threads(n=2):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # can only be set once, before any parallel work


def cpu_sample():
    """(wall time, busy jiffies of the whole machine, jiffies of this process)."""
    import time
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    with open("/proc/self/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return time.perf_counter(), sum(v) - v[3] - v[4], int(st[11]) + int(st[12])


def foreign_cores(a, b):
    """Average number of CPU cores used by OTHER processes between two cpu_sample()s."""
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / hz / max(b[0] - a[0], 1e-9))


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


class default_dtype:
    """Context manager: torch default dtype (nflows samples its base with the
    default dtype, so float64 runs must build and run under float64)."""

    def __init__(self, dtype):
        self.dtype, self.old = dtype, None

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *a):
        torch.set_default_dtype(self.old)


def load(name, split):
    d = SHARED_DATA
    return np.load(os.path.join(d, f"{name}_{split}.npy"))


def param_counts(module):
    """(total trainable numel, effective count).  The effective count counts a
    masked weight (MADE) only where its mask is non-zero; it equals the total
    for unmasked networks."""
    total = sum(p.numel() for p in module.parameters() if p.requires_grad)
    eff = total
    for m in module.modules():
        mask = getattr(m, "mask", None)
        w = getattr(m, "weight", None)
        if isinstance(mask, torch.Tensor) and isinstance(w, torch.Tensor) and mask.shape == w.shape:
            eff -= w.numel() - int((mask != 0).sum())
    return total, eff


# ----------------------------------------------------------------- digits
LOGIT_ALPHA = 1e-6
DIGITS_LEVELS = 17  # pixel values 0..16


def digits_dequantize(pixels, gen):
    """x = (pixels + u)/17, u ~ U[0,1)  ->  values in [0, 1)."""
    u = torch.rand(pixels.shape, generator=gen, dtype=pixels.dtype)
    return (pixels + u) / DIGITS_LEVELS


def logit_transform(x, alpha=LOGIT_ALPHA):
    """y = logit(alpha + (1-2 alpha) x); returns (y, log|dy/dx| summed over dims).

    dy/dx = (1-2 alpha) / (s (1-s)),  s = alpha + (1-2 alpha) x, so
      log p_x(x) = log p_y(y) + sum_i [log(1-2 alpha) - log s_i - log(1-s_i)].
    """
    s = alpha + (1 - 2 * alpha) * x
    y = torch.log(s) - torch.log1p(-s)
    ladj = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).sum(-1)
    return y, ladj


# ------------------------------------------------------------------ model
@dataclass
class Model:
    lib: str
    module: nn.Module
    log_prob: Callable
    sample: Callable
    recipe: str
    notes: list = field(default_factory=list)


class ContextMLP(nn.Module):
    """Plain ReLU MLP whose forward accepts (x, context=None), as nflows /
    normflows coupling layers call `transform_net(x, context)`.
    `hidden_features` is exposed because nflows/normflows spline couplings
    divide the width/height logits by sqrt(hidden_features) when the net
    has that attribute (as their own ResidualNet does)."""

    def __init__(self, in_features, out_features, hidden, zero_last=False):
        super().__init__()
        layers, prev = [], in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, out_features))
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)
        self.hidden_features = hidden[-1]

    def forward(self, x, context=None):
        return self.net(x)


# ------------------------- C1: RealNVP affine coupling -------------------
def build_realnvp(lib, D=2, layers=8, hidden=(64, 64)):
    hidden = list(hidden)
    if lib == "zuko":
        import zuko
        flow = zuko.flows.RealNVP(features=D, transforms=layers, hidden_features=hidden)
        return Model(
            lib, flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)),
            f"zuko.flows.RealNVP(features={D}, transforms={layers}, hidden_features={hidden}) "
            "[= NICE with GeneralCouplingTransform(mask=arange(D)%2==i%2, "
            "univariate=MonotonicAffineTransform), zuko.nn.MLP(ReLU)]; "
            "scale = exp(a/(1+|a/ln 1e-3|)) (soft-clamped log-scale); base DiagNormal(0,1)")
    if lib == "nflows":
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.coupling import AffineCouplingTransform
        from nflows.utils.torchutils import create_alternating_binary_mask
        ts = [AffineCouplingTransform(
            mask=create_alternating_binary_mask(D, even=(i % 2 == 1)),
            transform_net_create_fn=lambda i_, o_: ContextMLP(i_, o_, hidden))
            for i in range(layers)]
        flow = Flow(CompositeTransform(ts), StandardNormal([D]))
        return Model(
            lib, flow, lambda x: flow.log_prob(x), lambda n: flow.sample(n),
            f"nflows Flow(CompositeTransform([AffineCouplingTransform(mask="
            f"create_alternating_binary_mask({D}, even=(i%2==1)), transform_net_create_fn="
            f"MLP(in,out,{hidden},ReLU)) for i in range({layers})]), StandardNormal([{D}])); "
            "scale = sigmoid(a+2)+1e-3 (nflows default); the MLP is a local "
            "ContextMLP because nflows.nn.nets.MLP.forward does not accept the context arg")
    if lib == "normflows":
        import normflows as nf
        d1, d2 = (D + 1) // 2, D // 2
        fl = []
        for i in range(layers):
            fl.append(nf.flows.AffineCouplingBlock(
                nf.nets.MLP([d1] + hidden + [2 * d2], init_zeros=True),
                scale=True, scale_map="exp", split_mode="channel"))
            fl.append(nf.flows.Permute(D, mode="swap"))
        model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(D, trainable=False), flows=fl)
        return Model(
            lib, model, lambda x: model.log_prob(x), lambda n: model.sample(n)[0],
            f"normflows NormalizingFlow(q0=DiagGaussian({D}, trainable=False), flows="
            f"[AffineCouplingBlock(nf.nets.MLP([{d1}]+{hidden}+[{2 * d2}], init_zeros=True), "
            f"scale=True, scale_map='exp', split_mode='channel'), Permute({D}, mode='swap')] x {layers}); "
            "scale = exp(s) (sampling direction); last MLP layer zero-initialised (normflows "
            "example default); model.sample also returns log q (computed, discarded)")
    raise ValueError(lib)


# ---------------------------- C2/C5: MAF and IAF ---------------------------
def _reverse_permute_normflows(nf, D):
    p = nf.flows.Permute(D, mode="shuffle")
    rev = torch.arange(D - 1, -1, -1)
    p.perm.copy_(rev)
    p.inv_perm.copy_(rev)
    return p


def build_maf(lib, D=64, layers=5, hidden=(256, 256), inverse=False):
    """MAF (inverse=False): density = one MADE pass per layer, sampling = D
    sequential passes.  IAF (inverse=True): the same layers inverted."""
    hidden = list(hidden)
    kind = "IAF" if inverse else "MAF"
    if lib == "zuko":
        import zuko
        from zuko.distributions import DiagNormal
        from zuko.flows import Flow, MaskedAutoregressiveTransform, UnconditionalDistribution
        if not inverse:
            flow = zuko.flows.MAF(features=D, transforms=layers, hidden_features=hidden)
            recipe = (f"zuko.flows.MAF(features={D}, transforms={layers}, hidden_features={hidden}) "
                      "[MaskedAutoregressiveTransform with order ascending/descending alternately, "
                      "passes=D, MaskedMLP(ReLU)]")
        else:
            orders = [torch.arange(D), torch.flipud(torch.arange(D))]
            ts = [MaskedAutoregressiveTransform(features=D, order=orders[i % 2],
                                                hidden_features=hidden).inv
                  for i in range(layers)]
            base = UnconditionalDistribution(DiagNormal, loc=torch.zeros(D),
                                             scale=torch.ones(D), buffer=True)
            flow = Flow(ts, base)
            recipe = (f"zuko.flows.Flow([MaskedAutoregressiveTransform(features={D}, order="
                      f"asc/desc alternating, hidden_features={hidden}).inv for i in range({layers})], "
                      "UnconditionalDistribution(DiagNormal, zeros, ones, buffer=True))")
        recipe += "; scale = exp(a/(1+|a/ln 1e-3|)); base DiagNormal(0,1)"
        return Model(lib, flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), recipe)
    if lib == "nflows":
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
        from nflows.transforms.base import CompositeTransform, InverseTransform
        from nflows.transforms.permutations import ReversePermutation
        assert len(hidden) >= 1 and len(set(hidden)) == 1, "nflows MADE needs equal widths"
        ts = []
        for i in range(layers):
            if i > 0:
                ts.append(ReversePermutation(D))
            t = MaskedAffineAutoregressiveTransform(
                features=D, hidden_features=hidden[0], num_blocks=len(hidden) - 1,
                use_residual_blocks=False, random_mask=False, activation=F.relu,
                dropout_probability=0.0, use_batch_norm=False)
            ts.append(InverseTransform(t) if inverse else t)
        flow = Flow(CompositeTransform(ts), StandardNormal([D]))
        inner = (f"MaskedAffineAutoregressiveTransform(features={D}, hidden_features={hidden[0]}, "
                 f"num_blocks={len(hidden) - 1}, use_residual_blocks=False, random_mask=False, "
                 "activation=F.relu, dropout_probability=0.0, use_batch_norm=False)")
        if inverse:
            inner = f"InverseTransform({inner})"
        recipe = (f"nflows Flow(CompositeTransform([{inner}, ReversePermutation({D}) between layers] "
                  f"x {layers}), StandardNormal([{D}])); MADE hidden = {hidden} "
                  "(initial layer + num_blocks feed-forward blocks); scale = softplus(a)+1e-3 "
                  "(nflows 0.14 MAAT)")
        return Model(lib, flow, lambda x: flow.log_prob(x), lambda n: flow.sample(n), recipe)
    if lib == "normflows":
        import normflows as nf
        assert len(set(hidden)) == 1
        fl = []
        for i in range(layers):
            t = nf.flows.MaskedAffineAutoregressive(
                features=D, hidden_features=hidden[0], num_blocks=len(hidden) - 1,
                use_residual_blocks=False, random_mask=False, activation=F.relu,
                dropout_probability=0.0, use_batch_norm=False)
            # normflows flows run base->data in forward(); MaskedAffineAutoregressive's
            # forward() is the one-pass MADE direction, so used directly it is an IAF.
            # nf.flows.Reverse swaps the directions and gives a MAF.
            fl.append(t if inverse else nf.flows.Reverse(t))
            if i < layers - 1:
                fl.append(_reverse_permute_normflows(nf, D))
        model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(D, trainable=False), flows=fl)
        inner = (f"MaskedAffineAutoregressive(features={D}, hidden_features={hidden[0]}, "
                 f"num_blocks={len(hidden) - 1}, use_residual_blocks=False, random_mask=False, "
                 "activation=F.relu)")
        if not inverse:
            inner = f"Reverse({inner})"
        recipe = (f"normflows NormalizingFlow(q0=DiagGaussian({D}, trainable=False), flows=[{inner}, "
                  f"Permute({D}, 'shuffle') with perm/inv_perm overwritten to reversal, between layers] "
                  f"x {layers}); scale = sigmoid(a+2)+1e-3. NOTE: normflows' "
                  "MaskedAffineAutoregressive used directly is an IAF (its forward, used for "
                  "sampling, is the one-pass direction); MAF needs nf.flows.Reverse")
        return Model(lib, model, lambda x: model.log_prob(x), lambda n: model.sample(n)[0], recipe)
    raise ValueError(lib)


# --------------------- C3: neural spline (RQS) coupling ---------------------
def build_nsf_coupling(lib, D=2, layers=4, bins=8, hidden=(64, 64), bound=SPLINE_BOUND):
    hidden = list(hidden)
    if lib == "zuko":
        from zuko.distributions import DiagNormal
        from zuko.flows import Flow, GeneralCouplingTransform, UnconditionalDistribution
        from zuko.transforms import MonotonicRQSTransform
        from functools import partial
        uni = partial(MonotonicRQSTransform, bound=bound)
        ts = [GeneralCouplingTransform(features=D, mask=torch.arange(D) % 2 == i % 2,
                                       univariate=uni, shapes=[(bins,), (bins,), (bins - 1,)],
                                       hidden_features=hidden)
              for i in range(layers)]
        base = UnconditionalDistribution(DiagNormal, loc=torch.zeros(D), scale=torch.ones(D), buffer=True)
        flow = Flow(ts, base)
        return Model(
            lib, flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)),
            f"zuko.flows.Flow([GeneralCouplingTransform(features={D}, mask=arange({D})%2==i%2, "
            f"univariate=partial(MonotonicRQSTransform, bound={bound}), shapes=[({bins},),({bins},),"
            f"({bins - 1},)], hidden_features={hidden}) for i in range({layers})], DiagNormal(0,1)). "
            "True coupling (zuko.flows.NSF(passes=2) would instead be a masked-autoregressive "
            "net that also transforms the first half elementwise). Interior knot derivatives "
            "exp(soft-clamped d), boundary derivatives 1, identity outside [-B,B]")
    if lib in ("nflows", "normflows"):
        if lib == "nflows":
            from nflows.distributions.normal import StandardNormal
            from nflows.flows.base import Flow
            from nflows.transforms.base import CompositeTransform
            from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform as C
            from nflows.utils.torchutils import create_alternating_binary_mask as cabm
        else:
            import normflows as nf
            from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling as C
            from normflows.utils.masks import create_alternating_binary_mask as cabm
        ts = [C(mask=cabm(D, even=(i % 2 == 1)),
                transform_net_create_fn=lambda i_, o_: ContextMLP(i_, o_, hidden),
                num_bins=bins, tails="linear", tail_bound=bound,
                apply_unconditional_transform=False)
              for i in range(layers)]
        common = (f"mask=create_alternating_binary_mask({D}, even=(i%2==1)), transform_net_create_fn="
                  f"MLP(in, out, {hidden}, ReLU), num_bins={bins}, tails='linear', tail_bound={bound}, "
                  "apply_unconditional_transform=False")
        if lib == "nflows":
            flow = Flow(CompositeTransform(ts), StandardNormal([D]))
            return Model(
                lib, flow, lambda x: flow.log_prob(x), lambda n: flow.sample(n),
                f"nflows Flow(CompositeTransform([PiecewiseRationalQuadraticCouplingTransform({common}) "
                f"for i in range({layers})]), StandardNormal([{D}])); width/height logits divided "
                "by sqrt(hidden) (nflows behaviour when the net exposes hidden_features); "
                "min bin width/height/derivative 1e-3")

        class _Spline(nf.flows.Flow):
            # same direction convention as nf.flows.CoupledRationalQuadraticSpline
            def __init__(self, t):
                super().__init__()
                self.prqct = t

            def forward(self, z, context=None):
                z, ld = self.prqct.inverse(z, context)
                return z, ld.view(-1)

            def inverse(self, z, context=None):
                z, ld = self.prqct(z, context)
                return z, ld.view(-1)

        model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(D, trainable=False),
                                   flows=[_Spline(t) for t in ts[::-1]])
        return Model(
            lib, model, lambda x: model.log_prob(x), lambda n: model.sample(n)[0],
            f"normflows NormalizingFlow(q0=DiagGaussian({D}, trainable=False), flows=[wrapper around "
            f"normflows.flows.neural_spline.coupling.PiecewiseRationalQuadraticCoupling({common})] "
            f"x {layers}). nf.flows.CoupledRationalQuadraticSpline was NOT used because it "
            "hard-codes a ResidualNet conditioner and apply_unconditional_transform=True "
            "(extra elementwise spline on the identity half)")
    raise ValueError(lib)
