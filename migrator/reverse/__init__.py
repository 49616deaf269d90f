"""Reverse sync: MongoDB documents back to MySQL rows, after the write switch."""
