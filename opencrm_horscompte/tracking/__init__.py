"""Tracking codes (generation, normalisation, display) and the deposit pipeline."""
