"""Baselines the product is measured against, each a few dozen lines."""
