"""Campaigns and analysis: the results driver (sweep), campaign definitions, aggregation,
statistics and plots. Nothing here is imported by the training scripts."""
