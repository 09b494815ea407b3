"""Tests of the management portal (fabric/portal)."""
