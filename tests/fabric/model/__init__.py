"""Tests for fabric.model."""
