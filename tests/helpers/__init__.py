"""Reusable test helpers: a loopback image server, generated image bytes, a stand-in Discord."""
