"""data_prep: readers for raw datasets (Wikipedia, AG News, DBpedia, FewRel, CSV) and corpus preparation.

Raw files go in, cached token arrays (numpy + JSON sidecar) come out; nothing here trains a model.
"""
