"""Our aggregation against rliable (Agarwal et al., 2021), the field's reference implementation.

The same (runs, tasks) score matrix goes to both. The IQM must be identical (both trim 25% of
the scores from each end). The stratified-bootstrap intervals resample runs within each task in
both libraries, but with different random streams (rliable draws through `arch`), so they are
compared with enough resamples that both estimate the same bootstrap distribution closely.
"""

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from qmp_experiments.aggregate import mean_over_tasks_iqm
from qmp_experiments.stats import iqm, stratified_bootstrap_ci

SCORES = np.random.default_rng(7).beta(2.0, 1.5, size=(5, 10))  # 5 seeds x 10 tasks


def test_iqm_equals_rliables():
    for size in (4, 5, 8, 10, 50):
        scores = np.random.default_rng(size).random(size)
        assert float(iqm(scores)) == pytest.approx(metrics.aggregate_iqm(scores), abs=1e-12)
    assert float(iqm(SCORES.reshape(-1))) == pytest.approx(metrics.aggregate_iqm(SCORES), abs=1e-12)


@pytest.mark.parametrize(
    "statistic",
    [
        pytest.param(mean_over_tasks_iqm, id="our reported statistic: IQM of task means"),
        pytest.param(lambda m: float(iqm(m.reshape(-1))), id="rliable's IQM of all scores"),
    ],
)
def test_stratified_bootstrap_interval_matches_rliables(statistic):
    reps = 4000
    points, intervals = rly.get_interval_estimates(
        {"method": SCORES},
        lambda m: np.array([statistic(m)]),
        reps=reps,
        random_state=np.random.RandomState(0),
    )
    ours = stratified_bootstrap_ci(SCORES, statistic=statistic, num_resamples=reps, seed=0)
    assert statistic(SCORES) == pytest.approx(float(points["method"][0]), abs=1e-12)
    low, high = intervals["method"][:, 0]
    # Two Monte-Carlo estimates of the same percentiles: they agree to about 1% of the range.
    assert ours[0] == pytest.approx(low, abs=0.01) and ours[1] == pytest.approx(high, abs=0.01)
    assert ours[0] < statistic(SCORES) < ours[1]
