"""Tests for fabric.controller."""
