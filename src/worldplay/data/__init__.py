"""Gameplay data: the dataset format, sources and policies, recording, import and loading."""
