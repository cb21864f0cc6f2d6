"""The track runners (posthoc, train, words, store, table, scale, lm, mteb) and their settings."""
