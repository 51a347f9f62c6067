"""Kernel implementations per device, and the chooser that picks one per call."""
