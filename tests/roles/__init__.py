"""Tests for roles."""
