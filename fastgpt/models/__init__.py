"""Small models shipped with fastgpt as package data (see each folder's README.md)."""
