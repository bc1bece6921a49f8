"""Tests of secagg.primitives, masking, config, graph and session, with known-answer vectors.

A package (not loose modules) so that its test file names cannot clash with test files of the
same name elsewhere under ``tests/``.
"""
