"""Tests of the aws provider (against a moto server)."""
