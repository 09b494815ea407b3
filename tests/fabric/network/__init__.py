"""Tests for fabric.network."""
