"""Labels and acquisition: the label store, the label space, reading and checking labels,
annotators, acquisition functions, splitting, and the labelling loop with its rounds and
stopping rules.
"""
