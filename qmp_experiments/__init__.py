"""The campaign library: the results driver (sweep), campaign definitions, aggregation,
statistics, plots, the comparison with the paper and the results index. The one-question studies
over campaigns (``qmp_studies``) stand above it; the training scripts and their harness below it
never import it."""
