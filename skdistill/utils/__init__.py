"""Validation and device helpers shared by the estimators."""
