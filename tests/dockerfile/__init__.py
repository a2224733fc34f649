"""Tests of the Dockerfile front end: parser, expansion, typed instructions."""
