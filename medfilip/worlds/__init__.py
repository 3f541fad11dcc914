"""Controlled worlds: phantoms whose visual similarity follows the labels' text similarity to a chosen degree (docs/worlds.md)."""
