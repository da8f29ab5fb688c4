"""Reporting: evaluation and gates, the classical baseline, model cards and plots."""
