"""Tests for fabric."""
