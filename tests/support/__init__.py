"""Helpers shared by several test files (fixtures stay in conftest.py)."""
