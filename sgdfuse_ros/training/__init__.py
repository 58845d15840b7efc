"""Losses, data sets and training loops."""
