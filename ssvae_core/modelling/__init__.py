"""The model and its components: building the SSVAE, the component protocols, heads,
priors, networks, loss terms, the objective, likelihoods, conditioning, schedules and
inference.
"""
