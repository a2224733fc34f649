"""The Dockerfile front end: text -> syntax tree -> typed instructions and stages."""
