"""Encoders (paper Table 1) and Monte Carlo dropout sampling."""

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from astrokin.fitting.encoders import Encoder  # noqa: E402
from astrokin.fitting.mc_dropout import (  # noqa: E402
    mc_dropout_summary,
    naive_samples,
    shared_trunk_samples,
)


def test_encoder_follows_table_1():
    enc = Encoder(3)
    convs = [m for m in enc.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in enc.features) == 4
    # no activation after the first convolution, a ReLU after the others
    assert isinstance(enc.features[1], torch.nn.MaxPool2d)
    assert enc.hidden[0].in_features == 2048 and enc.hidden[0].out_features == 256
    assert enc.dropout.p == 0.1 and enc.last.in_features == 256
    x = torch.randn(4, 1, 64, 64) * 100
    enc.last.bias.data.fill_(50.0)  # force saturation: Hardtanh keeps outputs in [-1, 1]
    with torch.no_grad():
        out = enc.eval()(x)
    assert out.shape == (4, 3) and float(out.abs().max()) <= 1.0


def test_encoder_rejects_no_outputs():
    with pytest.raises(ValueError, match="at least one output"):
        Encoder(0)


def test_forward_is_trunk_then_head():
    enc = Encoder(2).eval()
    x = torch.rand(3, 1, 64, 64)
    assert torch.equal(enc(x), enc.head(enc.trunk(x)))


@pytest.mark.parametrize("counter_based", [False, True])
def test_shared_trunk_equals_naive_loop_in_distribution(counter_based):
    """Shared-trunk MC dropout and T full passes sample the same distribution.

    Outputs of an untrained encoder (whose pre-Hardtanh outputs sit well
    inside [-1, 1], so no clipping) for three inputs. Per output: the means
    must agree within 5 combined standard errors, the standard deviations
    within 5 standard errors of a standard deviation (sd / sqrt(2 T)), and a
    two-sample KS test must not reject at p < 1e-4. With fixed seeds the test
    is deterministic; the thresholds are loose enough not to be seed-picked.
    """
    torch.manual_seed(0)
    encs = [Encoder(3), Encoder(2)]
    for e in encs:
        e.last.weight.data *= 5  # a wider spread than at initialisation
    inputs = [torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)]
    t_naive, t_shared = 1000, 4000
    torch.manual_seed(1)
    naive = naive_samples(encs, inputs, t_naive)
    chunks = list(shared_trunk_samples(encs, inputs, t_shared, seed=2, chunk_size=700,
                                       counter_based=counter_based))
    shared = [torch.cat([c[k] for c in chunks], dim=1) for k in range(2)]
    for a, b in zip(naive, shared, strict=True):
        assert a.shape[:2] == (3, t_naive) and b.shape[:2] == (3, t_shared)
        a, b = a.numpy(), b.numpy()
        sd = b.std(axis=1)
        assert np.all(sd > 1e-3)
        se_mean = np.sqrt(sd**2 / t_naive + sd**2 / t_shared)
        np.testing.assert_array_less(np.abs(a.mean(axis=1) - b.mean(axis=1)), 5 * se_mean)
        np.testing.assert_array_less(np.abs(a.std(axis=1) - sd), 5 * sd / np.sqrt(2 * t_naive))
        for g in range(3):
            for j in range(a.shape[2]):
                assert stats.ks_2samp(a[g, :, j], b[g, :, j]).pvalue > 1e-4


def test_summary_matches_numpy_and_is_chunk_independent():
    torch.manual_seed(0)
    encs = [Encoder(2)]
    x = [torch.rand(5, 1, 64, 64)]
    s = mc_dropout_summary(encs, x, 300, seed=4, keep_samples=True, galaxy_block=2)
    samples = s.samples
    assert samples.shape == (5, 300, 2)
    np.testing.assert_allclose(s.mean, samples.mean(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s.std, samples.std(axis=1, ddof=1), rtol=1e-5, atol=1e-8)
    mad = np.abs(samples - samples.mean(axis=1, keepdims=True)).mean(axis=1)
    np.testing.assert_allclose(s.mad, mad, rtol=1e-5, atol=1e-8)
    for g in range(5):
        np.testing.assert_allclose(s.cov[g], np.cov(samples[g].T), rtol=1e-5, atol=1e-9)
    # streaming over a different block size gives the same summaries
    s2 = mc_dropout_summary(encs, x, 300, seed=4, galaxy_block=5)
    assert s2.samples is None
    np.testing.assert_allclose(s2.std, s.std, rtol=1e-4)


def test_summary_of_a_circular_quantity():
    """Angles straddling 0/360 average to ~0, not ~180."""
    encs = [Encoder(1)]
    x = [torch.rand(1, 1, 64, 64)]

    def transform(outputs, index):
        return torch.remainder(outputs[0] * 200.0, 360.0)  # spread over about +-10 deg about 0

    encs[0].last.weight.data *= 0.05
    encs[0].last.bias.data.zero_()
    s = mc_dropout_summary(encs, x, 500, transform, periods=[360.0], seed=0, keep_samples=True)
    assert min(s.mean[0, 0], 360 - s.mean[0, 0]) < 5
    assert s.std[0, 0] < 20
    assert np.all((s.samples >= 0) & (s.samples < 360))


@pytest.mark.parametrize("counter_based", [False, True])
def test_a_galaxys_samples_do_not_depend_on_its_batch(counter_based):
    """The same galaxy, alone or third in a batch of five, in chunks of any size."""
    torch.manual_seed(0)
    encs = [Encoder(3), Encoder(2)]
    x = [torch.rand(5, 1, 64, 64), torch.rand(5, 1, 64, 64)]
    kw = dict(seed=9, counter_based=counter_based)
    batch = [torch.cat(c, dim=1) for c in zip(*shared_trunk_samples(
        encs, x, 300, chunk_size=128, **kw), strict=True)]
    alone = [torch.cat(c, dim=1) for c in zip(*shared_trunk_samples(
        encs, [v[2:3] for v in x], 300, first_index=2, chunk_size=77, **kw), strict=True)]
    for a, b in zip(batch, alone, strict=True):
        torch.testing.assert_close(a[2:3], b, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a[1], a[2])  # other galaxies, other streams


def test_counter_based_masks_are_bernoulli_and_uncorrelated():
    from astrokin.fitting.mc_dropout import _counter_masks, _galaxy_key

    keys = torch.tensor([_galaxy_key(1, i) for i in range(4)])
    m = _counter_masks(keys, 0, 0, 2000, 200, 0.9, torch.float32).numpy()
    assert m.shape == (4, 2000, 200)
    assert abs(m.mean() - 0.9) < 5 * np.sqrt(0.09 / m.size)
    assert abs(np.corrcoef(m[:, :, :-1].ravel(), m[:, :, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(m[:, :-1].ravel(), m[:, 1:].ravel())[0, 1]) < 0.01
    other = _counter_masks(keys, 1, 0, 2000, 200, 0.9, torch.float32).numpy()
    assert abs(np.corrcoef(m.ravel(), other.ravel())[0, 1]) < 0.01
