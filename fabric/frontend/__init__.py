"""RDFE and FFE: the HTTP Service Management API and its translation into fabric commands."""

from __future__ import annotations
