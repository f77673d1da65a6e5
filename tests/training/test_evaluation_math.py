"""Each estimator of the evaluation against a direct computation on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.contract.latent_paths import lerp, slerp
from training.evaluation.classes import class_coverage, inception_score, label_agreement
from training.evaluation.frechet import frechet_between, frechet_distance, frechet_per_class
from training.evaluation.memorisation import memorisation_check, nearest_neighbours
from training.evaluation.parzen import parzen_log_likelihoods, parzen_protocol
from training.evaluation.precision_recall import in_manifold, knn_radii, precision_recall

rng = np.random.default_rng(0)


def parzen_direct(x: np.ndarray, mu: np.ndarray, sigma: float) -> np.ndarray:
    """The estimator written as the formula: a double loop, log of a mean of Gaussians."""
    d = x.shape[1]
    out = []
    for xj in x:
        dens = [math.exp(-((xj - m) ** 2).sum() / (2 * sigma**2)) for m in mu]
        out.append(math.log(sum(dens) / len(mu)) - d * math.log(sigma * math.sqrt(2 * math.pi)))
    return np.array(out)


def test_parzen_matches_the_double_loop() -> None:
    x, mu = rng.uniform(0, 1, (7, 5)), rng.uniform(0, 1, (11, 5))
    sigmas = np.array([0.2, 0.5, 1.0])
    fast = parzen_log_likelihoods(x, mu, sigmas, chunk=3)
    for s, sigma in enumerate(sigmas):
        np.testing.assert_allclose(fast[s], parzen_direct(x, mu, sigma), rtol=1e-10)
    np.testing.assert_allclose(parzen_log_likelihoods(x, mu, 0.5), fast[1])


def test_parzen_is_stable_where_exp_underflows() -> None:
    # sigma 0.1 in 784 dims: exp(-d2 / 2 sigma^2) is 0 in float64, the log-mean-exp is not
    x, mu = rng.uniform(0, 1, (3, 784)), rng.uniform(0, 1, (4, 784))
    ll = parzen_log_likelihoods(x, mu, 0.1)
    assert np.isfinite(ll).all() and (ll < -1000).all()


def test_protocol_picks_sigma_on_validation_and_reports_se() -> None:
    mu, valid = rng.normal(0, 1, (50, 3)), rng.normal(0, 1, (20, 3))
    test = rng.normal(0, 1, (30, 3))
    sigmas = np.logspace(-1, 0, 10)
    result = parzen_protocol(mu, valid, test, sigmas)
    val = parzen_log_likelihoods(valid, mu, sigmas).mean(axis=1)
    assert result.sigma == sigmas[np.argmax(val)]
    test_ll = parzen_log_likelihoods(test, mu, result.sigma)
    assert result.ll == pytest.approx(test_ll.mean())
    assert result.se == pytest.approx(test_ll.std() / math.sqrt(30))


def test_frechet_distance_closed_form_for_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_a_shift() -> None:
    a = rng.normal(0, 1, (500, 4)) @ rng.normal(0, 1, (4, 4))
    assert frechet_between(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_between(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)


def test_inception_score_bounds() -> None:
    confident = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.eye(10)[np.zeros(100, int)]) == pytest.approx(1.0)
    assert inception_score(np.full((100, 10), 0.1)) == pytest.approx(1.0)


def test_class_coverage_counts_digits() -> None:
    logits = np.full((100, 10), -10.0)
    logits[np.arange(100), np.r_[np.zeros(60, int), np.ones(37, int), np.full(3, 2)]] = 10
    result = class_coverage(logits, np.arange(1000) % 10)
    assert result.histogram[:3] == pytest.approx([0.6, 0.37, 0.03])
    assert result.classes_at_5_percent == 2
    expected_kl = sum(p * math.log(p / 0.1) for p in (0.6, 0.37, 0.03))
    assert result.kl_to_reference == pytest.approx(expected_kl, rel=1e-6)


def test_nearest_neighbours_match_brute_force() -> None:
    x, ref = rng.uniform(0, 1, (9, 6)), rng.uniform(0, 1, (40, 6))
    index, dist = nearest_neighbours(x, ref, chunk=4)
    brute = np.linalg.norm(x[:, None] - ref[None], axis=2)
    np.testing.assert_array_equal(index, brute.argmin(1))
    np.testing.assert_allclose(dist, brute.min(1), atol=1e-7)


def test_memorisation_check_flags_copies_and_passes_fresh_draws() -> None:
    train, test = rng.uniform(0, 1, (500, 20)), rng.uniform(0, 1, (200, 20))
    copies = train[:200] + rng.normal(0, 1e-3, (200, 20))
    assert not memorisation_check(copies, test, train).clean
    fresh = rng.uniform(0, 1, (200, 20))
    result = memorisation_check(fresh, test, train)
    assert result.clean and result.closer_than_test_p1 < 0.05


def test_interpolations_start_and_end_at_the_endpoints() -> None:
    z0, z1 = rng.normal(0, 1, 100).astype(np.float32), rng.normal(0, 1, 100).astype(np.float32)
    for path in (lerp(z0, z1, 7), slerp(z0, z1, 7)):
        assert path.shape == (7, 100)
        np.testing.assert_allclose(path[0], z0, atol=1e-5)
        np.testing.assert_allclose(path[-1], z1, atol=1e-5)
    np.testing.assert_allclose(lerp(z0, z1, 3)[1], (z0 + z1) / 2, atol=1e-6)
    same_norm = z1 / np.linalg.norm(z1) * np.linalg.norm(z0)
    norms = np.linalg.norm(slerp(z0, same_norm, 9), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(z0), rtol=1e-5)  # stays on the sphere
    with pytest.raises(ValueError):
        lerp(z0, z1, 1)


# --- precision and recall (Kynkäänniemi et al., 2019) ---------------------------------

REAL = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
FAKE = np.array([[0.5], [5.0], [20.0]])


def test_knn_radii_are_the_distance_to_the_kth_other_point() -> None:
    # 1-D by hand: the nearest other point of 0, 1, 2, 3 is 1 away, of 10 it is 3 (7 away)
    np.testing.assert_allclose(knn_radii(REAL, k=1), [1, 1, 1, 1, 7])
    np.testing.assert_allclose(knn_radii(REAL, k=3), [3, 2, 2, 3, 9], atol=1e-12)
    # a duplicate is a neighbour at distance 0, the point itself is not
    np.testing.assert_allclose(knn_radii(np.array([[0.0], [0.0], [4.0]]), k=1), [0, 0, 4])
    # chunking does not change anything
    x = rng.normal(0, 1, (50, 3))
    np.testing.assert_allclose(knn_radii(x, 3, chunk=7), knn_radii(x, 3), atol=1e-12)
    with pytest.raises(ValueError, match="k must be in"):
        knn_radii(REAL, k=5)


def test_in_manifold_counts_a_point_on_a_boundary_as_inside() -> None:
    points, radii = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([1.0, 2.0])
    queries = np.array([[1.0, 0.0], [1.0, 0.1], [8.0, 0.0], [5.0, 0.0]])
    np.testing.assert_array_equal(in_manifold(queries, points, radii),
                                  [True, False, True, False])


def test_precision_and_recall_by_hand() -> None:
    # k = 1. Real balls: [-1, 1], [0, 2], [1, 3], [2, 4] and the outlier's [3, 17].
    # Fakes: 0.5 is inside, 5 only in the outlier's ball, 20 outside: precision 2/3.
    # Fake radii (nearest other fake): 4.5, 4.5, 15; every real point lies within one of
    # those balls (10 is 10 from 20 <= 15): recall 1.
    result = precision_recall(REAL, FAKE, k=1)
    assert result.precision == pytest.approx(2 / 3) and result.recall == 1.0
    assert (result.k, result.n_real, result.n_generated) == (1, 5, 3)
    # swapping the roles swaps the two numbers' meaning: 0, 1, 2, 3 inside the fake balls
    swapped = precision_recall(FAKE, REAL, k=1)
    assert swapped.precision == 1.0 and swapped.recall == pytest.approx(2 / 3)
    # radii passed in are used as given
    assert precision_recall(REAL, FAKE, 1, real_radii=np.zeros(5)).precision == 0.0


def test_precision_and_recall_see_a_dropped_mode_and_bad_samples() -> None:
    real = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(20, 1, (300, 2))])
    one_mode = rng.normal(0, 1, (600, 2))  # realistic samples of half of the data
    result = precision_recall(real, one_mode)
    assert result.precision > 0.9 and 0.4 < result.recall < 0.6
    off = rng.normal(10, 1, (600, 2))  # covering nothing real
    assert precision_recall(real, off).precision < 0.05
    fresh = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(20, 1, (300, 2))])
    both = precision_recall(real, fresh)
    assert both.precision > 0.9 and both.recall > 0.9


# --- a conditional generator's classes -------------------------------------------------


def test_label_agreement_by_hand() -> None:
    requested = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    result = label_agreement(requested, predicted, n_classes=4)
    assert result.overall == pytest.approx(6 / 8)
    assert result.per_class == [pytest.approx(0.75), 0.5, 1.0, None]  # nothing asked of 3
    assert result.confusion == [[3, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    assert result.n_samples == 8
    with pytest.raises(ValueError, match="integers in 0..3"):
        label_agreement(requested, predicted + 2, n_classes=4)
    with pytest.raises(ValueError, match="equal non-empty"):
        label_agreement(requested, predicted[:3], n_classes=4)


def test_frechet_per_class_compares_like_with_like() -> None:
    a = rng.normal(0, 1, (400, 2))
    labels = np.arange(400) % 2
    b = a + np.where(labels[:, None] == 1, 3.0, 0.0)  # class 1 shifted by (3, 3)
    assert frechet_per_class(a, labels, b, labels, 2) == [
        pytest.approx(0.0, abs=1e-8), pytest.approx(18.0, rel=1e-6)]
    np.testing.assert_allclose(frechet_per_class(a, labels, a[::-1], labels[::-1], 2), 0,
                               atol=1e-8)
