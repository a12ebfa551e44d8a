"""From the user's text to ids a model trains on.

corpus.py   reading sources (files, standard input) and the one set of checks and messages for them
encode.py   the one pipeline: a corpus encoded once into <run>/data/ids.npy and memory-mapped
streams.py  the parallel streams of truncated backpropagation through time
"""
