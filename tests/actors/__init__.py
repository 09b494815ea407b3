"""Tests for actors."""
