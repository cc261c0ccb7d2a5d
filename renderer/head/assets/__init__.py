"""Baked data of the built-in head (builtin_head.npz), shipped as package data."""
