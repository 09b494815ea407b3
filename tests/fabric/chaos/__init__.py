"""Tests for fabric.chaos."""
