"""Tests for reddog."""
