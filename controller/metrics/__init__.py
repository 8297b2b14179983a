"""Metric providers, one module per provider behind metrics.base.MetricProvider, picked by metrics.registry."""
