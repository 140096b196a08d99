"""One-question studies over campaigns (the Kitchen check, the PointReach grid and figure, the
Q-switch scores, the prefix comparison, a variant's effect seed by seed, a policy rendered) and
the local Ray cluster the tests and benchmarks start: each reads the campaign library
(``qmp_experiments``), none is read by it."""
