"""Training: the SimBERT / RoFormer-Sim objectives and CoSENT."""
