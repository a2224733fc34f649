"""Attacks on the builder, run for real (issue 9): each test fails on the code before its fix."""
