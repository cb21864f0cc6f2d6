"""Result records, the on-disk record store and comparing two result folders."""
