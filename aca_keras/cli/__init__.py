"""Thin command-line front ends over the library functions."""
