import numpy as np
import pytest

from richreps import counterexample as ce


@pytest.mark.parametrize("seed", range(5))
def test_optimal_error_is_smallest_point_mass(seed):
    rng = np.random.default_rng(seed)
    for lam in rng.dirichlet(np.ones(4), size=50):
        masses = ce.mixture(lam)
        best = ce.optimal_classifiers(masses)
        assert best[0].error == pytest.approx(masses.min(), abs=1e-12)
        for clf in best:  # misclassifies one least-weighted point, with a single feature
            assert len(clf.misclassified) == 1
            assert masses[clf.misclassified[0]] == pytest.approx(masses.min(), abs=1e-12)
            assert len(clf.features) == 1


def test_only_the_xor_labellings_are_not_linear():
    realisable = {signs for signs, _ in ce.realizable_dichotomies()}
    assert len(realisable) == 14
    assert (1, 1, -1, -1) not in realisable and (-1, -1, 1, 1) not in realisable


def test_ignored_point_decides_the_feature():
    cases = {
        0: [0.1, 0.4, 0.25, 0.25],
        1: [0.4, 0.1, 0.25, 0.25],
        2: [0.25, 0.25, 0.1, 0.4],
        3: [0.25, 0.25, 0.4, 0.1],
    }
    for point, lam in cases.items():
        clf = ce.optimal_classifier(ce.mixture(lam))
        assert clf.misclassified == (point,)
        assert clf.features == ((0,) if point < 2 else (1,))
        pred = np.sign(ce.POINTS @ clf.w + clf.b)
        assert tuple(pred.astype(int)) == clf.signs


def test_probe_coverage_of_each_representation():
    table = ce.coverage_table()
    assert table.loc["phi1"].tolist() == [1.0, 1.0, 0.75, 0.75]
    assert table.loc["phi2"].tolist() == [0.75, 0.75, 1.0, 1.0]
    assert table.loc["(phi1, phi2)"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert ce.served_components((0,)) == (0, 1)
    assert ce.probe_accuracy(ce.COMPONENTS[0], ()) == 0.5  # constant classifier


def test_sweep_counts_ties_on_the_boundary():
    table = ce.sweep_table(n_dirichlet=200, seed=1, edge_steps=4)
    interior = table[table["kind"] == "interior"]
    assert (interior["n_served"] == 2).all() and not interior["tie"].any()
    balanced_edge = table[table["lambda"].apply(lambda v: v == [0.5, 0.5, 0.0, 0.0])]
    assert balanced_edge["tie"].item() and balanced_edge["n_optimal"].item() == 4
    summary = ce.sweep_summary(table)
    assert summary.loc["total", "total"] == len(table)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([0.5, 0.5, 0.5, -0.5], "negative"),
        ([0.2, 0.2, 0.2, 0.2], "sum to 1"),
        ([np.nan, 0.5, 0.5, 0.0], "NaN"),
        ([0.5, 0.5], "entries"),
    ],
)
def test_bad_lambda_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match="lambda") as err:
        ce.mixture(bad)
    assert match in str(err.value)


def test_covariance_zero_set_of_the_paper_family():
    rng = np.random.default_rng(0)
    for lam in rng.dirichlet(np.ones(4), size=100):
        assert ce.mixture_covariance(lam, ce.paper_family(0)) == pytest.approx((lam[0] - lam[1]) / 2)
        assert ce.mixture_covariance(lam, ce.paper_family(1)) == pytest.approx((lam[3] - lam[2]) / 2)
        assert ce.between_term(lam, ce.paper_family(0)) == pytest.approx(0, abs=1e-15)
    assert ce.mixture_covariance([0.3, 0.3, 0.1, 0.3], ce.paper_family(0)) == pytest.approx(0, abs=1e-15)
    assert ce.zero_set_measure(ce.paper_family(0), n=10_000) == 0.0
    assert ce.segment_zeros(ce.paper_family(0), 0, 1) == ([0.5], [0.5])


def test_simpson_pair_has_zeros_the_proof_misses():
    fam = ce.simpson_family()
    assert ce.component_moments(fam)["Cov[phi,Y]"].tolist() == pytest.approx([0.32, 0.32])
    exact, proof = ce.segment_zeros(fam, 0, 1)
    root = (1 - np.sqrt(0.4 / 0.72)) / 2  # Cov(t) = -0.4 + 0.72 (2t - 1)^2
    assert exact == pytest.approx([root, 1 - root])
    assert proof == []
    for t in exact:
        assert ce.mixture_covariance([t, 1 - t], fam) == pytest.approx(0, abs=1e-12)


def test_sparse_learner_keeps_the_informative_feature_and_concat_restores_coverage():
    gates, _, _ = ce.train_gated(np.array([[0.4, 0.2, 0.2, 0.2]] * 4), np.arange(4))
    assert all(ce.kept_features(g) == (0,) for g in gates)
    gates, _, _ = ce.train_gated(np.array([[0.25] * 4] * 2), np.arange(2))
    assert all(ce.kept_features(g) == () for g in gates)  # no signal, nothing survives
    assert ce.concat_coverage((0,), (1,)) == [1.0, 1.0, 1.0, 1.0]


def test_learner_is_deterministic_per_seed_and_independent_of_batching():
    lams = np.array([[0.3, 0.2, 0.3, 0.2], [0.4, 0.2, 0.2, 0.2]])
    g_both, _, _ = ce.train_gated(lams, np.array([3, 4]), steps=300)
    g_one, _, _ = ce.train_gated(lams[1:], np.array([4]), steps=300)
    np.testing.assert_array_equal(g_both[1], g_one[0])


def test_interior_ties_are_strictly_interior_and_reported_as_ties():
    ties = ce.interior_ties()
    assert len(ties) == 4 and ties["tie"].all() and (ties["margin"] > 0).all()
    for lam, masses in zip(ties["interior example"], ties["masses"]):
        assert min(lam) > 0 and abs(sum(lam) - 1) < 1e-12
        m = sorted(masses)
        assert m[0] == m[1] < m[2]  # exactly two lightest points, one read by each feature
    assert ce.classify_mixture([0.25] * 4)["tie"]  # the balanced mixture lies on all four pieces
