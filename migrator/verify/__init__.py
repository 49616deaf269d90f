"""Verification: MySQL rows vs MongoDB documents, compared through the mapping's Transform."""
