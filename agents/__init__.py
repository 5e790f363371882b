"""Agents: everything that ranks."""
