"""Tests for fabric.frontend."""
