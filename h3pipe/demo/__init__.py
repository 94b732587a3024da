"""Offline demo data: synthetic stand-ins for the public collections h3pipe reads."""
