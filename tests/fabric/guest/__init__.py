"""Tests for fabric.guest."""
