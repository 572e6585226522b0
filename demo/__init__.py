"""The synthetic demo corpus: not part of the paper's pipeline, a stand-in dataset that runs it end
to end."""
