"""Reward labeling: labelers (one module each, named in labelers.LABELERS) turn a dataset and a task sentence
into labels/<run>/reward; judges (label/judges/) answer frame-pair preferences; eval scores runs vs ground truth.
"""
