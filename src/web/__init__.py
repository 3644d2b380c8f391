"""The HTTP side: the contract, the outer layer, routing and the compiled per-operation pipeline."""
