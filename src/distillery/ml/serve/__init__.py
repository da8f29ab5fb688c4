"""Serving: predictors, the MLflow pyfunc bundle, the registry and latency measurement."""
