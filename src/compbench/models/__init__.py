"""Backbones: the pretrained sentence encoder (posthoc track) and small classifiers (train track)."""
