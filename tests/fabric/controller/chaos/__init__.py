"""Tests for fabric.controller.chaos (the chaos agent inside the controller)."""
