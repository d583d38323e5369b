"""Shared pytest configuration for duroxy's tests (fixtures used by several modules)."""
