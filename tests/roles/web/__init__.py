"""Tests for roles.web."""
