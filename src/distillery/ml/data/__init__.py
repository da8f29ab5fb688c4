"""Data: reading corpora, text normalisation and tokenisation, batches, drift profiles."""
