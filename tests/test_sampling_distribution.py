"""Do the draws follow the filtered distribution? Chi-square goodness-of-fit tests with fixed seeds.

Each draw is one row with its own seed, over a small vocabulary whose probabilities are known, so the
expected distribution after temperature, min-p, top-k and top-p is computed here by hand. A test passes
when the chi-square test does not reject the expected distribution at ALPHA, and it is shown able to fail:
the same draws against a deliberately wrong distribution must be rejected.

On the GPU the kernel's own draws are tested (20000 per setting). In the Triton interpreter a draw costs
milliseconds, so on a CPU the test runs on the torch reference's draws (which use the kernel's noise), and
``test_kernel_draws_match_the_reference`` checks that the kernel draws the very same tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from kernels._sampling_params import RequestParams as P
from kernels.sampling import SamplingTensors, sample, sample_reference

pytestmark = pytest.mark.sample

ALPHA = 1e-3
PROBS = [0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02]


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution (closed forms for integer degrees of freedom)."""
    h = x / 2
    if df % 2 == 0:
        return math.exp(-h) * sum(h**i / math.factorial(i) for i in range(df // 2))
    return math.erfc(math.sqrt(h)) + math.exp(-h) * sum(
        h ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (df - 1) // 2 + 1))


def test_chi2_sf_matches_table_values():
    # 5% critical values from any statistics table.
    for x, df in [(3.841, 1), (5.991, 2), (7.815, 3), (9.488, 4), (11.070, 5), (12.592, 6), (14.067, 7)]:
        assert chi2_sf(x, df) == pytest.approx(0.05, abs=2e-4)


def chi2_pvalue(counts: list[int], expected: list[float]) -> float:
    n = sum(counts)
    support = [i for i, p in enumerate(expected) if p > 0]
    if any(counts[i] for i in range(len(counts)) if expected[i] == 0):
        return 0.0  # a draw the expected distribution forbids
    stat = sum((counts[i] - n * expected[i]) ** 2 / (n * expected[i]) for i in support)
    return chi2_sf(stat, len(support) - 1)


def _normalise(w):
    s = sum(w)
    return [v / s for v in w]


# (parameters, the expected distribution derived by hand from PROBS, a wrong distribution to reject)
SETTINGS = [
    # T = 0.5 squares the probabilities; wrong: forgetting the temperature.
    (P(temperature=0.5), _normalise([p**2 for p in PROBS]), PROBS),
    # top-k 5 then top-p 0.6: masses 0.3, 0.2, 0.15 of 0.85 reach 0.6 * 0.85 at the third token.
    (P(top_k=5, top_p=0.6), _normalise(PROBS[:3] + [0] * 5), _normalise(PROBS[:5] + [0] * 3)),
    # min-p 0.25 keeps p >= 0.075: six tokens; wrong: top-p semantics instead (0.3..0.1 reach 0.75).
    (P(min_p=0.25), _normalise(PROBS[:6] + [0] * 2), _normalise(PROBS[:4] + [0] * 4)),
    # top-k 4 with T = 2 (square roots); the 4th value is tied with the 5th, and ties at a threshold are
    # kept: five tokens. Wrong: the untempered top 5.
    (P(temperature=2.0, top_k=4), _normalise([math.sqrt(p) for p in PROBS[:5]] + [0] * 3),
     _normalise(PROBS[:5] + [0] * 3)),
]


def _draw(fn, params, n, device, step=0):
    logits = torch.tensor(PROBS, device=device).log()[None].repeat(n, 1)
    st = SamplingTensors.build([params] * n, [[]] * n, [[0] * step] * n, [1000 + i for i in range(n)], len(PROBS),
                               device)
    return torch.bincount(fn(logits, st).token_ids.cpu(), minlength=len(PROBS)).tolist()


def _check(counts, expected, wrong):
    p_ok, p_wrong = chi2_pvalue(counts, expected), chi2_pvalue(counts, wrong)
    assert p_ok > ALPHA, f"draws {counts} reject the expected distribution (p = {p_ok:.2e})"
    assert p_wrong < ALPHA, f"draws {counts} fail to reject a wrong distribution (p = {p_wrong:.2e})"


@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_reference_draws_follow_the_filtered_distribution(setting):
    params, expected, wrong = SETTINGS[setting]
    _check(_draw(sample_reference, params, 20000, "cpu"), expected, wrong)


@pytest.mark.gpu
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_kernel_draws_follow_the_filtered_distribution(setting, device):
    params, expected, wrong = SETTINGS[setting]
    _check(_draw(sample, params, 20000, device, step=3), expected, wrong)


@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_kernel_draws_match_the_reference(setting, device):
    params, _, _ = SETTINGS[setting]
    n = 24
    logits = torch.tensor(PROBS, device=device).log()[None].repeat(n, 1)
    st = SamplingTensors.build([params] * n, [[]] * n, [[]] * n, [1000 + i for i in range(n)], len(PROBS), device)
    assert sample(logits, st).token_ids.tolist() == sample_reference(logits, st).token_ids.tolist()
