"""Compression: student construction, distillation, vocabulary pruning, quantisation, export."""
