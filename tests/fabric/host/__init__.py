"""Tests for fabric.host."""
