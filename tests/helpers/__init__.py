"""Reusable test helpers: a loopback image server and generated image bytes."""
